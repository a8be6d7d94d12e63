//! The access half of RabbitMQ's definitions JSON: `users` (with `password_hash` and
//! `hashing_algorithm`), `vhosts`, `permissions`, `topic_permissions`, and vhost limits as
//! `parameters` of component `vhost-limits`. The same text is what `access.json` in the data
//! directory holds, so a file exported from RabbitMQ and Warren's own store read alike.

use super::password::{self, Hashing};
use super::registry::{
    Pattern, Permission, Registry, TopicPermission, User, UserLimits, VhostInfo, VhostLimits,
};
use serde_json::{json, Map, Value};

/// The access entities of a registry, as RabbitMQ exports them.
pub(crate) fn export(r: &Registry) -> Value {
    let users: Vec<Value> = r.users.values().map(user_json).collect();
    let vhosts: Vec<Value> = r
        .vhosts
        .values()
        .map(|v| {
            let mut metadata = json!({"description": v.description, "tags": v.tags});
            if let Some(t) = &v.default_queue_type {
                metadata["default_queue_type"] = json!(t);
            }
            json!({"name": v.name, "description": v.description, "tags": v.tags,
                   "metadata": metadata})
        })
        .collect();
    let permissions: Vec<Value> = r
        .permissions
        .iter()
        .map(|((user, vhost), p)| {
            json!({"user": user, "vhost": vhost, "configure": p.configure.source(),
                   "write": p.write.source(), "read": p.read.source()})
        })
        .collect();
    let topic_permissions: Vec<Value> = r
        .topic_permissions
        .iter()
        .map(|((user, vhost, exchange), p)| {
            json!({"user": user, "vhost": vhost, "exchange": exchange,
                   "write": p.write.source(), "read": p.read.source()})
        })
        .collect();
    let parameters: Vec<Value> = r
        .vhosts
        .values()
        .filter(|v| v.limits != VhostLimits::default())
        .map(|v| {
            json!({"vhost": v.name, "component": "vhost-limits", "name": "limits",
                   "value": vhost_limits_json(&v.limits)})
        })
        .collect();
    json!({"users": users, "vhosts": vhosts, "permissions": permissions,
           "topic_permissions": topic_permissions, "parameters": parameters})
}

/// One user as definitions carry it.
pub(crate) fn user_json(u: &User) -> Value {
    json!({"name": u.name, "password_hash": u.password_hash,
           "hashing_algorithm": u.hashing.name(), "tags": u.tags,
           "limits": user_limits_json(&u.limits)})
}

/// User limits as `{"max-connections": n, "max-channels": n}` (unset ones left out).
pub(crate) fn user_limits_json(l: &UserLimits) -> Value {
    let mut m = Map::new();
    if let Some(n) = l.max_connections {
        m.insert("max-connections".into(), json!(n));
    }
    if let Some(n) = l.max_channels {
        m.insert("max-channels".into(), json!(n));
    }
    Value::Object(m)
}

/// Vhost limits as `{"max-connections": n, "max-queues": n}` (unset ones left out).
pub(crate) fn vhost_limits_json(l: &VhostLimits) -> Value {
    let mut m = Map::new();
    if let Some(n) = l.max_connections {
        m.insert("max-connections".into(), json!(n));
    }
    if let Some(n) = l.max_queues {
        m.insert("max-queues".into(), json!(n));
    }
    Value::Object(m)
}

/// Merges the access entities of a definitions document into `r`. Validates everything and
/// changes `r` only when the whole document is valid (an import that fails applies nothing).
pub(crate) fn import(r: &mut Registry, defs: &Value) -> Result<(), String> {
    let mut next = r.clone();
    for v in list(defs, "vhosts")? {
        let info = vhost_from(v)?;
        let limits = next
            .vhosts
            .get(&info.name)
            .map(|old| old.limits)
            .unwrap_or_default();
        next.vhosts
            .insert(info.name.clone(), VhostInfo { limits, ..info });
    }
    for u in list(defs, "users")? {
        let user = user_from(u)?;
        next.users.insert(user.name.clone(), user);
    }
    for p in list(defs, "permissions")? {
        let (user, vhost) = (field(p, "user")?, field(p, "vhost")?);
        known(&next, &user, &vhost)?;
        let perm = Permission {
            configure: Pattern::new(&field(p, "configure")?)?,
            write: Pattern::new(&field(p, "write")?)?,
            read: Pattern::new(&field(p, "read")?)?,
        };
        next.permissions.insert((user, vhost), perm);
    }
    for p in list(defs, "topic_permissions")? {
        let (user, vhost) = (field(p, "user")?, field(p, "vhost")?);
        known(&next, &user, &vhost)?;
        let tp = TopicPermission {
            write: Pattern::new(&field(p, "write")?)?,
            read: Pattern::new(&field(p, "read")?)?,
        };
        next.topic_permissions
            .insert((user, vhost, field(p, "exchange")?), tp);
    }
    for p in list(defs, "parameters")? {
        if p.get("component").and_then(Value::as_str) != Some("vhost-limits") {
            continue;
        }
        let vhost = field(p, "vhost")?;
        let limits = vhost_limits_from(p.get("value").unwrap_or(&Value::Null))?;
        next.vhosts
            .get_mut(&vhost)
            .ok_or_else(|| format!("vhost '{vhost}' does not exist"))?
            .limits = limits;
    }
    *r = next;
    Ok(())
}

fn known(r: &Registry, user: &str, vhost: &str) -> Result<(), String> {
    if !r.users.contains_key(user) {
        return Err(format!("user '{user}' does not exist"));
    }
    if !r.vhosts.contains_key(vhost) {
        return Err(format!("vhost '{vhost}' does not exist"));
    }
    Ok(())
}

/// The list under `key` of a definitions document (missing or null: empty).
pub(crate) fn list<'a>(defs: &'a Value, key: &str) -> Result<&'a [Value], String> {
    match defs.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(format!("'{key}' must be a list")),
    }
}

fn field(v: &Value, key: &str) -> Result<String, String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("missing or non-string '{key}' in {v}"))
}

/// Tags as a list or as RabbitMQ's older comma-separated string.
pub(crate) fn tags_from(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// A user from definitions: `password_hash` + `hashing_algorithm` (RabbitMQ's export), or a
/// clear-text `password` (hashed here).
pub(crate) fn user_from(u: &Value) -> Result<User, String> {
    let name = field(u, "name")?;
    let tags = tags_from(u.get("tags"));
    let mut user = if let Some(p) = u.get("password").and_then(Value::as_str) {
        User::new(&name, Some(p), tags)
    } else {
        let hashing = match u.get("hashing_algorithm").and_then(Value::as_str) {
            None => Hashing::Sha256,
            Some(n) => Hashing::from_name(n)
                .ok_or_else(|| format!("unsupported hashing algorithm '{n}' for user '{name}'"))?,
        };
        let hash = u
            .get("password_hash")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !password::well_formed(hashing, &hash) {
            return Err(format!("invalid password_hash for user '{name}'"));
        }
        User {
            name: name.clone(),
            password_hash: hash,
            hashing,
            tags,
            limits: UserLimits::default(),
        }
    };
    user.limits = user_limits_from(u.get("limits").unwrap_or(&Value::Null))?;
    Ok(user)
}

fn vhost_from(v: &Value) -> Result<VhostInfo, String> {
    let meta = v.get("metadata");
    let from_meta = |key: &str| meta.and_then(|m| m.get(key));
    Ok(VhostInfo {
        name: field(v, "name")?,
        description: v
            .get("description")
            .or_else(|| from_meta("description"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        tags: tags_from(v.get("tags").or_else(|| from_meta("tags"))),
        default_queue_type: v
            .get("default_queue_type")
            .or_else(|| from_meta("default_queue_type"))
            .and_then(Value::as_str)
            .map(str::to_string),
        limits: VhostLimits::default(),
    })
}

/// A limit value: a non-negative integer sets it, a negative one clears it (RabbitMQ).
fn limit(v: &Value, key: &str) -> Result<Option<u64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => match n.as_i64() {
            Some(n) if n < 0 => Ok(None),
            Some(n) => Ok(Some(n as u64)),
            None => Err(format!("'{key}' must be an integer, got {n}")),
        },
    }
}

fn only_keys(v: &Value, keys: &[&str]) -> Result<(), String> {
    match v {
        Value::Null => Ok(()),
        Value::Object(m) => match m.keys().find(|k| !keys.contains(&k.as_str())) {
            Some(k) => Err(format!("unrecognised limit '{k}'")),
            None => Ok(()),
        },
        Value::Array(a) if a.is_empty() => Ok(()),
        _ => Err(format!("limits must be an object, got {v}")),
    }
}

/// User limits from `{"max-connections": n, "max-channels": n}`.
pub(crate) fn user_limits_from(v: &Value) -> Result<UserLimits, String> {
    only_keys(v, &["max-connections", "max-channels"])?;
    Ok(UserLimits {
        max_connections: limit(v, "max-connections")?,
        max_channels: limit(v, "max-channels")?,
    })
}

/// Vhost limits from `{"max-connections": n, "max-queues": n}`.
pub(crate) fn vhost_limits_from(v: &Value) -> Result<VhostLimits, String> {
    only_keys(v, &["max-connections", "max-queues"])?;
    Ok(VhostLimits {
        max_connections: limit(v, "max-connections")?,
        max_queues: limit(v, "max-queues")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_fails_whole() {
        let defs = json!({
            "users": [{"name": "a", "password": "pw", "tags": "administrator,monitoring",
                       "limits": {"max-connections": 3}},
                      {"name": "cert", "password_hash": "", "tags": []}],
            "vhosts": [{"name": "v1", "metadata": {"description": "d"}}],
            "permissions": [{"user": "a", "vhost": "v1", "configure": "", "write": ".*",
                             "read": "^q"}],
            "topic_permissions": [{"user": "a", "vhost": "v1", "exchange": "amq.topic",
                                   "write": "^a", "read": ".*"}],
            "parameters": [{"vhost": "v1", "component": "vhost-limits", "name": "limits",
                            "value": {"max-queues": 2, "max-connections": -1}}]
        });
        let mut r = Registry::default();
        import(&mut r, &defs).unwrap();
        assert_eq!(r.users["a"].tags, ["administrator", "monitoring"]);
        assert_eq!(r.users["a"].limits.max_connections, Some(3));
        assert_eq!(r.vhosts["v1"].limits.max_queues, Some(2));
        assert_eq!(r.vhosts["v1"].limits.max_connections, None);
        let out = export(&r);
        let mut again = Registry::default();
        import(&mut again, &out).unwrap();
        assert_eq!(export(&again), out);

        let bad = json!({"users": [{"name": "b", "password": "x"}],
                         "permissions": [{"user": "b", "vhost": "nope", "configure": ".*",
                                          "write": ".*", "read": ".*"}]});
        let before = export(&r);
        assert!(import(&mut r, &bad).is_err());
        assert_eq!(export(&r), before, "nothing applied");
        assert!(!r.users.contains_key("b"));
    }
}
