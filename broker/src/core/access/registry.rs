//! The access data: users (password hashes, tags, limits), vhosts (metadata, limits),
//! permissions and topic permissions, with the checks RabbitMQ's internal backend makes
//! (`rabbit_auth_backend_internal`, `rabbit_access_control`). Pure data: no locks, no I/O.

use super::password::{self, Hashing};
use crate::core::error::{AmqpError, Code};
use regex::Regex;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A permission kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Perm {
    /// Create or delete a resource (declare, delete).
    Configure,
    /// Inject messages into it (publish to an exchange, bind a destination).
    Write,
    /// Take messages from it (consume, get, purge, bind from a source exchange).
    Read,
}

/// The kind of a resource a permission protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    /// A queue.
    Queue,
    /// An exchange ("" is the default exchange, checked as `amq.default`).
    Exchange,
}

/// A regular expression as RabbitMQ stores it: the source text, matched unanchored
/// (`re:run`); an empty one means `^$` (matches only the empty name). A topic permission's
/// pattern may hold `{username}` and `{vhost}`, filled in at each check.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    source: String,
    /// The compiled pattern; None for one with variables.
    re: Option<Regex>,
}

const VARIABLES: [&str; 3] = ["{username}", "{vhost}", "{client_id}"];

impl Pattern {
    /// Compiles a permission pattern; the error is RabbitMQ's text for an invalid one.
    pub(crate) fn new(source: &str) -> Result<Self, String> {
        let templated = VARIABLES.iter().any(|v| source.contains(v));
        let probe = VARIABLES
            .iter()
            .fold(source.to_string(), |s, v| s.replace(v, "x"));
        let effective = if probe.is_empty() { "^$" } else { &probe };
        let re = Regex::new(effective)
            .map_err(|e| format!("invalid regular expression '{source}': {e}"))?;
        Ok(Pattern {
            source: source.to_string(),
            re: (!templated).then_some(re),
        })
    }

    /// The text as given.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    fn matches(&self, name: &str) -> bool {
        self.re.as_ref().is_some_and(|re| re.is_match(name))
    }

    /// Matches with the variables filled in as RabbitMQ's `expand_topic_permission` does: each
    /// `{name}` with a value is replaced by it as is (not escaped: the value is part of the
    /// regular expression); one without a value (`{client_id}` outside MQTT) stays, and PCRE
    /// reads it as literal text.
    fn matches_with(&self, name: &str, vars: &TopicVars<'_>) -> bool {
        if self.re.is_some() {
            return self.matches(name);
        }
        let mut expanded = self.source.clone();
        for (var, value) in [
            ("{username}", Some(vars.user)),
            ("{vhost}", Some(vars.vhost)),
            ("{client_id}", vars.client_id),
        ] {
            let with = match value {
                Some(v) => v.to_string(),
                None => regex::escape(var),
            };
            expanded = expanded.replace(var, &with);
        }
        Regex::new(&expanded).is_ok_and(|re| re.is_match(name))
    }
}

/// The values of a topic permission's variables for one check: the user's name, the vhost,
/// and for MQTT the client id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TopicVars<'a> {
    /// `{username}`.
    pub(crate) user: &'a str,
    /// `{vhost}`.
    pub(crate) vhost: &'a str,
    /// `{client_id}` (MQTT connections only).
    pub(crate) client_id: Option<&'a str>,
}

/// Configure, write and read patterns of one user in one vhost.
#[derive(Debug, Clone)]
pub(crate) struct Permission {
    /// Configure pattern.
    pub(crate) configure: Pattern,
    /// Write pattern.
    pub(crate) write: Pattern,
    /// Read pattern.
    pub(crate) read: Pattern,
}

impl Permission {
    /// Full permissions (`.*` for each).
    pub(crate) fn all() -> Self {
        let p = Pattern::new(".*").expect("valid pattern");
        Permission {
            configure: p.clone(),
            write: p.clone(),
            read: p,
        }
    }

    fn pattern(&self, perm: Perm) -> &Pattern {
        match perm {
            Perm::Configure => &self.configure,
            Perm::Write => &self.write,
            Perm::Read => &self.read,
        }
    }
}

/// Write and read patterns on the routing keys of one topic exchange.
#[derive(Debug, Clone)]
pub(crate) struct TopicPermission {
    /// Write pattern (publishing with a routing key).
    pub(crate) write: Pattern,
    /// Read pattern (binding with a routing key).
    pub(crate) read: Pattern,
}

/// Limits of one user; `None` (or negative in definitions) means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UserLimits {
    /// `max-connections`.
    pub(crate) max_connections: Option<u64>,
    /// `max-channels` (across all the user's connections).
    pub(crate) max_channels: Option<u64>,
}

/// Limits of one vhost; `None` means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct VhostLimits {
    /// `max-connections`.
    pub(crate) max_connections: Option<u64>,
    /// `max-queues`.
    pub(crate) max_queues: Option<u64>,
}

/// A user of the internal database.
#[derive(Debug, Clone)]
pub(crate) struct User {
    /// The user name.
    pub(crate) name: String,
    /// Base64 salt ++ digest; empty for a user without a password (certificate login only).
    pub(crate) password_hash: String,
    /// How `password_hash` was made.
    pub(crate) hashing: Hashing,
    /// Tags (administrator, monitoring, management, policymaker, impersonator, ...).
    pub(crate) tags: Vec<String>,
    /// Connection and channel limits.
    pub(crate) limits: UserLimits,
}

impl User {
    /// A user with a freshly hashed password (None: no password) and tags.
    pub(crate) fn new(name: &str, password: Option<&str>, tags: Vec<String>) -> Self {
        User {
            name: name.to_string(),
            password_hash: password
                .map(|p| password::hash(Hashing::Sha256, p))
                .unwrap_or_default(),
            hashing: Hashing::Sha256,
            tags,
            limits: UserLimits::default(),
        }
    }
}

/// A virtual host's metadata (its topology lives in the core's state).
#[derive(Debug, Clone, Default)]
pub(crate) struct VhostInfo {
    /// The vhost name.
    pub(crate) name: String,
    /// Free-form description.
    pub(crate) description: String,
    /// Tags.
    pub(crate) tags: Vec<String>,
    /// The queue type declared when none is given (metadata only: every queue is classic).
    pub(crate) default_queue_type: Option<String>,
    /// Limits.
    pub(crate) limits: VhostLimits,
}

/// Who logged in: what a front-end keeps for its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthUser {
    /// The user name.
    pub(crate) name: String,
    /// The user's tags at login.
    pub(crate) tags: Vec<String>,
}

/// Users, vhosts, permissions and limits.
#[derive(Debug, Clone, Default)]
pub(crate) struct Registry {
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) vhosts: BTreeMap<String, VhostInfo>,
    /// (user, vhost) -> permission.
    pub(crate) permissions: BTreeMap<(String, String), Permission>,
    /// (user, vhost, exchange) -> topic permission.
    pub(crate) topic_permissions: BTreeMap<(String, String, String), TopicPermission>,
    /// Users who may log in only from a loopback address (RabbitMQ's `loopback_users`).
    pub(crate) loopback_users: Vec<String>,
}

/// The text RabbitMQ logs for a refused login (the client is told only that it was refused).
pub(crate) type Refusal = String;

impl Registry {
    /// Checks a user's password and source address, as `rabbit_auth_backend_internal` and
    /// `rabbit_access_control:check_user_loopback` do. `password` None means authenticate by
    /// name only (a verified client certificate: the EXTERNAL mechanism).
    pub(crate) fn authenticate(
        &self,
        name: &str,
        password: Option<&str>,
        peer: IpAddr,
    ) -> Result<AuthUser, Refusal> {
        if password == Some("") {
            return Err(format!(
                "user '{name}' attempted to log in with a blank password, which is prohibited by the internal authN backend. To use TLS/x509 certificate-based authentication, see the rabbitmq_auth_mechanism_ssl plugin and configure the client to use the EXTERNAL authentication mechanism. Alternatively change the password for the user to be non-blank."
            ));
        }
        let invalid = || format!("user '{name}' - invalid credentials");
        let Some(user) = self.users.get(name) else {
            if let Some(p) = password {
                // Equal work whether or not the user exists (no user enumeration by timing).
                let _ = password::verify(
                    Hashing::Sha256,
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                    p,
                );
            }
            return Err(invalid());
        };
        if let Some(p) = password {
            if !password::verify(user.hashing, &user.password_hash, p) {
                return Err(invalid());
            }
        }
        if !peer.is_loopback() && self.loopback_users.iter().any(|u| u == name) {
            return Err(format!("user '{name}' can only connect via localhost"));
        }
        Ok(AuthUser {
            name: user.name.clone(),
            tags: user.tags.clone(),
        })
    }

    /// `check_vhost_access`: the vhost must exist and the user must have permissions in it
    /// (530 NOT_ALLOWED otherwise, a connection error).
    pub(crate) fn check_vhost(&self, user: &str, vhost: &str) -> Result<(), AmqpError> {
        if self.vhosts.contains_key(vhost)
            && self
                .permissions
                .contains_key(&(user.to_string(), vhost.to_string()))
        {
            return Ok(());
        }
        Err(AmqpError::new(
            Code::NotAllowed,
            format!("access to vhost '{vhost}' refused for user '{user}'"),
        ))
    }

    /// `check_resource_access`: whether `user` has `perm` on a queue or exchange, with
    /// RabbitMQ 3.10's 403 text ("access to exchange 'x' in vhost '/' refused for user 'u'";
    /// 3.11 and later put the permission in front: "write access to ...").
    pub(crate) fn check_resource(
        &self,
        user: &str,
        vhost: &str,
        kind: Resource,
        name: &str,
        perm: Perm,
    ) -> Result<(), AmqpError> {
        let (kind_name, name) = match kind {
            Resource::Queue => ("queue", name),
            Resource::Exchange if name.is_empty() => ("exchange", "amq.default"),
            Resource::Exchange => ("exchange", name),
        };
        let allowed = self
            .permissions
            .get(&(user.to_string(), vhost.to_string()))
            .is_some_and(|p| p.pattern(perm).matches(name));
        if allowed {
            return Ok(());
        }
        Err(AmqpError::new(
            Code::AccessRefused,
            format!("access to {kind_name} '{name}' in vhost '{vhost}' refused for user '{user}'"),
        ))
    }

    /// [`Registry::check_topic_with`] without a client id (the tests' shorthand).
    #[cfg(test)]
    pub(crate) fn check_topic(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        routing_key: &str,
        perm: Perm,
    ) -> Result<(), AmqpError> {
        let vars = TopicVars {
            user,
            vhost,
            client_id: None,
        };
        self.check_topic_with(&vars, exchange, routing_key, perm)
    }

    /// `check_topic_access`: a topic exchange's routing key against the user's topic
    /// permission for that exchange (none set: allowed). `{username}`, `{vhost}` and (MQTT)
    /// `{client_id}` in the pattern stand for the values in `vars`, as in RabbitMQ.
    pub(crate) fn check_topic_with(
        &self,
        vars: &TopicVars<'_>,
        exchange: &str,
        routing_key: &str,
        perm: Perm,
    ) -> Result<(), AmqpError> {
        if self.topic_permissions.is_empty() {
            return Ok(());
        }
        let (user, vhost) = (vars.user, vars.vhost);
        let key = (user.to_string(), vhost.to_string(), exchange.to_string());
        let Some(tp) = self.topic_permissions.get(&key) else {
            return Ok(());
        };
        let pattern = if perm == Perm::Read {
            &tp.read
        } else {
            &tp.write
        };
        if pattern.matches_with(routing_key, vars) {
            return Ok(());
        }
        Err(AmqpError::new(
            Code::AccessRefused,
            format!(
                "access to topic '{routing_key}' in exchange '{exchange}' in vhost '{vhost}' refused for user '{user}'"
            ),
        ))
    }

    /// Whether a vhost exists.
    pub(crate) fn has_vhost(&self, name: &str) -> bool {
        self.vhosts.contains_key(name)
    }

    /// Removes a user with their permissions and topic permissions; whether they existed.
    pub(crate) fn remove_user(&mut self, name: &str) -> bool {
        self.permissions.retain(|(u, _), _| u != name);
        self.topic_permissions.retain(|(u, _, _), _| u != name);
        self.users.remove(name).is_some()
    }

    /// Removes a vhost with every permission in it; whether it existed.
    pub(crate) fn remove_vhost(&mut self, name: &str) -> bool {
        self.permissions.retain(|(_, v), _| v != name);
        self.topic_permissions.retain(|(_, v, _), _| v != name);
        self.vhosts.remove(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let mut r = Registry::default();
        r.users
            .insert("u".into(), User::new("u", Some("pw"), vec![]));
        r.vhosts.insert(
            "/".into(),
            VhostInfo {
                name: "/".into(),
                ..VhostInfo::default()
            },
        );
        r.permissions.insert(
            ("u".into(), "/".into()),
            Permission {
                configure: Pattern::new("^u\\.").unwrap(),
                write: Pattern::new("").unwrap(),
                read: Pattern::new(".*").unwrap(),
            },
        );
        r.topic_permissions.insert(
            ("u".into(), "/".into(), "amq.topic".into()),
            TopicPermission {
                write: Pattern::new("^{username}\\.").unwrap(),
                read: Pattern::new(".*").unwrap(),
            },
        );
        r
    }

    #[test]
    fn resource_checks_use_rabbitmq_texts() {
        let r = registry();
        assert!(r
            .check_resource("u", "/", Resource::Queue, "u.q", Perm::Configure)
            .is_ok());
        let e = r
            .check_resource("u", "/", Resource::Queue, "q", Perm::Configure)
            .unwrap_err();
        assert_eq!(
            e.text,
            "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'u'"
        );
        let e = r
            .check_resource("u", "/", Resource::Exchange, "", Perm::Write)
            .unwrap_err();
        assert!(e.text.contains("exchange 'amq.default'"), "{}", e.text);
        assert!(r
            .check_resource("nobody", "/", Resource::Queue, "q", Perm::Read)
            .is_err());
    }

    #[test]
    fn topic_checks_expand_variables() {
        let r = registry();
        assert!(r
            .check_topic("u", "/", "amq.topic", "u.a", Perm::Write)
            .is_ok());
        let e = r
            .check_topic("u", "/", "amq.topic", "v.a", Perm::Write)
            .unwrap_err();
        assert_eq!(e.text, "ACCESS_REFUSED - access to topic 'v.a' in exchange 'amq.topic' in vhost '/' refused for user 'u'");
        assert!(r.check_topic("u", "/", "other", "v.a", Perm::Write).is_ok());
    }

    #[test]
    fn topic_variables_are_substituted_as_rabbitmq_does() {
        let mut r = registry();
        r.topic_permissions.insert(
            ("u".into(), "/".into(), "t".into()),
            TopicPermission {
                write: Pattern::new("^{client_id}\\.").unwrap(),
                read: Pattern::new("^{username}$").unwrap(),
            },
        );
        let mqtt = TopicVars {
            user: "u",
            vhost: "/",
            client_id: Some("c1"),
        };
        assert!(r.check_topic_with(&mqtt, "t", "c1.x", Perm::Write).is_ok());
        assert!(r.check_topic_with(&mqtt, "t", "c2.x", Perm::Write).is_err());
        // Without a client id (AMQP, STOMP) the placeholder is literal text.
        assert!(r
            .check_topic("u", "/", "t", "{client_id}.x", Perm::Write)
            .is_ok());
        assert!(r.check_topic("u", "/", "t", "c1.x", Perm::Write).is_err());
        // Values are not escaped: a user name is part of the expression, as in RabbitMQ.
        r.users
            .insert("a.b".into(), User::new("a.b", Some("pw"), vec![]));
        r.topic_permissions.insert(
            ("a.b".into(), "/".into(), "t".into()),
            TopicPermission {
                write: Pattern::new("^{username}$").unwrap(),
                read: Pattern::new("^{username}$").unwrap(),
            },
        );
        assert!(r.check_topic("a.b", "/", "t", "axb", Perm::Read).is_ok());
    }

    #[test]
    fn login_checks_password_and_loopback() {
        let mut r = registry();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(r.authenticate("u", Some("pw"), remote).unwrap().name, "u");
        assert!(r.authenticate("u", Some("bad"), local).is_err());
        assert!(r.authenticate("u", Some(""), local).is_err());
        assert!(r.authenticate("x", Some("pw"), local).is_err());
        r.loopback_users.push("u".into());
        assert_eq!(
            r.authenticate("u", Some("pw"), remote).unwrap_err(),
            "user 'u' can only connect via localhost"
        );
        assert!(r.authenticate("u", None, local).is_ok());
    }

    #[test]
    fn vhost_access_needs_permissions() {
        let r = registry();
        assert!(r.check_vhost("u", "/").is_ok());
        let e = r.check_vhost("u", "other").unwrap_err();
        assert_eq!(e.code, Code::NotAllowed);
        assert_eq!(
            e.text,
            "NOT_ALLOWED - access to vhost 'other' refused for user 'u'"
        );
    }
}
