//! The access data a broker starts with: what the builder's `.user()` / `.vhost()` options
//! (and the binary's config file) ask for, added to what the data directory kept, as
//! RabbitMQ seeds its default user and vhost on first boot.

use super::registry::{Permission, Registry, User, VhostInfo};

/// What the builder configured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seed {
    /// (name, clear-text password); empty means RabbitMQ's default guest/guest.
    pub(crate) users: Vec<(String, String)>,
    /// Vhosts besides "/".
    pub(crate) vhosts: Vec<String>,
    /// Users allowed to log in from loopback only; None: `["guest"]` when no user was
    /// configured (RabbitMQ's default), else none.
    pub(crate) loopback_users: Option<Vec<String>>,
}

/// Adds the configured users and vhosts that `r` lacks. `fresh` is true on a first boot (no
/// `access.json` yet): then "/" is created too (later boots keep a deleted "/" deleted).
/// Each configured user created here gets the `administrator` tag and full permissions on
/// every configured vhost; each configured vhost created here gives full permissions to every
/// configured user.
pub(crate) fn apply(r: &mut Registry, seed: &Seed, fresh: bool) {
    let users: Vec<(String, String)> = if seed.users.is_empty() {
        vec![("guest".into(), "guest".into())]
    } else {
        seed.users.clone()
    };
    let mut vhosts = seed.vhosts.clone();
    if fresh || r.vhosts.contains_key("/") {
        vhosts.insert(0, "/".into());
    }
    let mut new_users = Vec::new();
    for (name, password) in &users {
        if !r.users.contains_key(name) && (fresh || !seed.users.is_empty()) {
            r.users.insert(
                name.clone(),
                User::new(name, Some(password), vec!["administrator".into()]),
            );
            new_users.push(name.clone());
        }
    }
    for v in &vhosts {
        let created = !r.vhosts.contains_key(v);
        if created {
            r.vhosts.insert(
                v.clone(),
                VhostInfo {
                    name: v.clone(),
                    ..VhostInfo::default()
                },
            );
        }
        for (u, _) in &users {
            if (created || new_users.contains(u)) && r.users.contains_key(u) {
                r.permissions
                    .entry((u.clone(), v.clone()))
                    .or_insert_with(Permission::all);
            }
        }
    }
    if fresh {
        r.loopback_users = seed.loopback_users.clone().unwrap_or_else(|| {
            if seed.users.is_empty() {
                vec!["guest".into()]
            } else {
                Vec::new()
            }
        });
    } else if let Some(l) = &seed.loopback_users {
        r.loopback_users = l.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn default_guest_is_loopback_only_with_full_permissions_on_root() {
        let mut r = Registry::default();
        apply(&mut r, &Seed::default(), true);
        let local: IpAddr = "::1".parse().unwrap();
        let remote: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(r.authenticate("guest", Some("guest"), local).is_ok());
        assert!(r.authenticate("guest", Some("guest"), remote).is_err());
        assert!(r.check_vhost("guest", "/").is_ok());
        assert_eq!(r.users["guest"].tags, ["administrator"]);
    }

    #[test]
    fn configured_users_log_in_from_anywhere_and_later_boots_keep_changes() {
        let seed = Seed {
            users: vec![("app".into(), "pw".into())],
            vhosts: vec!["v".into()],
            loopback_users: None,
        };
        let mut r = Registry::default();
        apply(&mut r, &seed, true);
        let remote: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(r.authenticate("app", Some("pw"), remote).is_ok());
        assert!(r.check_vhost("app", "v").is_ok() && r.check_vhost("app", "/").is_ok());
        assert!(!r.users.contains_key("guest"));
        // An operator revoked a permission and deleted "/": a restart does not undo it.
        r.permissions.remove(&("app".into(), "v".into()));
        r.remove_vhost("/");
        apply(&mut r, &seed, false);
        assert!(r.check_vhost("app", "v").is_err());
        assert!(!r.vhosts.contains_key("/"));
    }
}
