//! Who may do what: users, vhosts, permissions, topic permissions and limits, as RabbitMQ's
//! internal database keeps them, and the connections counted against the limits.
//!
//! [`Access`] is the one entry point, shared by every front-end and the management layer:
//! - front-ends call [`Access::authenticate`] (or [`Access::authenticate_by_name`] for a
//!   verified client certificate), [`Access::open_connection`] at connection.open,
//!   [`Access::check_channel`] per new channel, and the checks of [`Registry`] (through
//!   [`Access::read`]) before each operation;
//! - the management layer lists, gets, puts and deletes users, vhosts, permissions, topic
//!   permissions and limits (each change is persisted to `access.json` in the data directory
//!   at once), and exports or imports them as RabbitMQ's definitions JSON.
//!
//! Its lock is separate from the state lock and never held together with it, except inside
//! [`Access::add_vhost`] / [`Access::delete_vhost`], which take this one first.

pub(crate) mod json;
pub(crate) mod password;
pub(crate) mod permits;
pub(crate) mod registry;
pub(crate) mod seed;

use crate::core::error::{AmqpError, Code};
use crate::core::message::ConnId;
use crate::core::state::StateLock;
pub(crate) use registry::{
    AuthUser, Pattern, Perm, Permission, Refusal, Registry, Resource, TopicPermission, TopicVars,
    User, UserLimits, VhostInfo, VhostLimits,
};
use serde_json::Value;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Asks a connection to close with 320 CONNECTION_FORCED and the given explanation.
pub(crate) type Closer = Box<dyn Fn(&str) + Send + Sync>;

/// An open connection, as counted against the limits.
struct Tracked {
    user: String,
    vhost: String,
    /// Channels open on it (kept up to date by its front-end).
    channels: Arc<AtomicUsize>,
    close: Closer,
}

/// Why a management change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AccessError {
    /// The named user, vhost, permission or limit does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed (a bad regex, an unknown hashing algorithm, ...).
    #[error("{0}")]
    Invalid(String),
}

/// A user as the management layer puts it (`PUT /api/users/NAME`).
#[derive(Debug, Clone, Default)]
pub(crate) struct UserSpec {
    /// The user name.
    pub(crate) name: String,
    /// How the password is given.
    pub(crate) password: PasswordSpec,
    /// Tags.
    pub(crate) tags: Vec<String>,
}

/// The password of a [`UserSpec`].
#[derive(Debug, Clone, Default)]
#[allow(dead_code)] // the management API constructs each
pub(crate) enum PasswordSpec {
    /// No password: the user logs in by certificate only.
    #[default]
    None,
    /// A clear-text password, hashed with salted SHA-256.
    Clear(String),
    /// A hash as RabbitMQ exports it, with its algorithm's name (None: SHA-256).
    Hash(String, Option<String>),
    /// Keep the existing user's password (a tags-only update).
    Keep,
}

/// Users, vhosts, permissions and limits, with their persistence and connection tracking.
pub(crate) struct Access {
    registry: RwLock<Registry>,
    /// Bumped by every change, so front-ends can cache granted checks.
    generation: AtomicU64,
    tracked: Mutex<HashMap<ConnId, Tracked>>,
    /// Signalled whenever a tracked connection goes away (vhost deletion waits on it).
    gone: tokio::sync::Notify,
    /// `access.json` in the data directory (None: memory-only).
    file: Option<PathBuf>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").field("file", &self.file).finish()
    }
}

impl Access {
    /// Access data kept in `file` (loaded by the caller), or in memory only.
    pub(crate) fn new(registry: Registry, file: Option<PathBuf>) -> Self {
        Access {
            registry: RwLock::new(registry),
            generation: AtomicU64::new(0),
            tracked: Mutex::new(HashMap::new()),
            gone: tokio::sync::Notify::new(),
            file,
        }
    }

    /// Reads `access.json` from a data directory: Ok(None) when there is none yet.
    pub(crate) fn load(dir: &std::path::Path) -> Result<Option<Registry>, String> {
        let path = dir.join("access.json");
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let value: Value = serde_json::from_slice(&text)
            .map_err(|e| format!("{} is corrupt: {e}", path.display()))?;
        let mut r = Registry::default();
        json::import(&mut r, &value)?;
        r.loopback_users = json::tags_from(value.get("loopback_users"));
        Ok(Some(r))
    }

    /// The registry, for checks (a read lock; do not hold it across an `.await`).
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|p| p.into_inner())
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<ConnId, Tracked>> {
        self.tracked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the registry to `access.json` (nothing without a data directory).
    fn persist(&self, r: &Registry) {
        if let Some(file) = &self.file {
            let mut v = json::export(r);
            v["loopback_users"] = serde_json::json!(r.loopback_users);
            if let Err(e) = crate::core::store::write_json_atomically(file, &v) {
                tracing::error!(error = %e, file = %file.display(), "cannot save access data");
            }
        }
    }

    /// Writes the registry to `access.json` now (at boot).
    pub(crate) fn save(&self) {
        self.persist(&self.read());
    }

    /// Applies a change to the registry and persists it.
    fn change<T>(
        &self,
        f: impl FnOnce(&mut Registry) -> Result<T, AccessError>,
    ) -> Result<T, AccessError> {
        let mut r = self.write();
        let out = f(&mut r)?;
        self.generation.fetch_add(1, Ordering::Release);
        self.persist(&r);
        Ok(out)
    }

    /// Changes with every change to the access data: checks granted under one generation
    /// hold until it changes.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    // ----- authentication -------------------------------------------------------------------

    /// Checks a user name and password from `peer` (RabbitMQ's internal backend plus its
    /// loopback-users rule). The refusal is for the log; clients are told only that the login
    /// was refused.
    pub(crate) fn authenticate(
        &self,
        user: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<AuthUser, Refusal> {
        self.read().authenticate(user, Some(password), peer)
    }

    /// Authenticates by name only, for a peer whose identity something else proved (a
    /// verified client certificate: the EXTERNAL mechanism). The user must exist; the
    /// loopback-users rule still applies.
    pub(crate) fn authenticate_by_name(
        &self,
        user: &str,
        peer: IpAddr,
    ) -> Result<AuthUser, Refusal> {
        self.read().authenticate(user, None, peer)
    }

    // ----- connections and limits -----------------------------------------------------------

    /// connection.open: the vhost's and the user's connection limits, then vhost access, in
    /// RabbitMQ's order and with its 530 texts; on success the connection is counted until
    /// [`Access::close_connection`]. `close` is how a deleted vhost or user closes it.
    pub(crate) fn open_connection(
        &self,
        id: ConnId,
        user: &str,
        vhost: &str,
        channels: Arc<AtomicUsize>,
        close: Closer,
    ) -> Result<(), AmqpError> {
        let r = self.read();
        let mut conns = self.conns();
        vhost_limit(&r, &conns, user, vhost)?;
        if let Some(limit) = r.users.get(user).and_then(|u| u.limits.max_connections) {
            let n = conns.values().filter(|c| c.user == user).count() as u64;
            if n >= limit {
                return Err(AmqpError::new(
                    Code::NotAllowed,
                    format!("connection refused for user '{user}': user connection limit ({limit}) is reached"),
                ));
            }
        }
        r.check_vhost(user, vhost)?;
        conns.insert(
            id,
            Tracked {
                user: user.to_string(),
                vhost: vhost.to_string(),
                channels,
                close,
            },
        );
        Ok(())
    }

    /// The vhost's connection limit alone, as RabbitMQ's direct connections (the MQTT and
    /// STOMP plugins) check it before they even authenticate the user: the error
    /// [`Access::open_connection`] would give.
    pub(crate) fn check_vhost_connections(&self, user: &str, vhost: &str) -> Result<(), AmqpError> {
        let r = self.read();
        let conns = self.conns();
        vhost_limit(&r, &conns, user, vhost)
    }

    /// Whether `user` may connect from `peer` under the loopback-users rule (for front-ends
    /// that, like RabbitMQ's MQTT and STOMP plugins, check it after opening the connection).
    pub(crate) fn loopback_allowed(&self, user: &str, peer: IpAddr) -> bool {
        peer.is_loopback() || !self.read().loopback_users.iter().any(|u| u == user)
    }

    /// Forgets a connection counted by [`Access::open_connection`].
    pub(crate) fn close_connection(&self, id: ConnId) {
        if self.conns().remove(&id).is_some() {
            self.gone.notify_waiters();
        }
    }

    /// channel.open: the user's channel limit across all their connections (530, as
    /// RabbitMQ's `create_channel`).
    pub(crate) fn check_channel(&self, id: ConnId) -> Result<(), AmqpError> {
        // Lock order everywhere: the registry, then the connections.
        let r = self.read();
        let conns = self.conns();
        let Some(me) = conns.get(&id) else {
            return Ok(());
        };
        let Some(limit) = r.users.get(&me.user).and_then(|u| u.limits.max_channels) else {
            return Ok(());
        };
        let open: u64 = conns
            .values()
            .filter(|c| c.user == me.user)
            .map(|c| c.channels.load(Ordering::Relaxed) as u64)
            .sum();
        if open >= limit {
            return Err(AmqpError::new(
                Code::NotAllowed,
                format!(
                    "number of channels opened for user '{}' has reached the maximum allowed user limit of ({limit})",
                    me.user
                ),
            ));
        }
        Ok(())
    }

    /// queue.declare of a new queue: the vhost's queue limit (406, as RabbitMQ's
    /// `check_vhost_queue_limit`), given how many queues the vhost has now.
    pub(crate) fn check_queue_limit(
        &self,
        vhost: &str,
        queue: &str,
        queues: usize,
    ) -> Result<(), AmqpError> {
        let limit = self
            .read()
            .vhosts
            .get(vhost)
            .and_then(|v| v.limits.max_queues);
        match limit {
            Some(limit) if queues as u64 >= limit => Err(AmqpError::precondition(format!(
                "cannot declare queue '{queue}': queue limit in vhost '{vhost}' ({limit}) is reached"
            ))),
            _ => Ok(()),
        }
    }

    /// Asks every connection matching `pred` to close (320 CONNECTION_FORCED, `why`); returns
    /// how many were asked.
    fn close_where(&self, why: &str, pred: impl Fn(&Tracked) -> bool) -> usize {
        let conns = self.conns();
        let mut n = 0;
        for c in conns.values().filter(|c| pred(c)) {
            (c.close)(why);
            n += 1;
        }
        n
    }
}

/// What the management layer (HTTP API, definitions) calls: list, get, put and delete users,
/// vhosts, permissions, topic permissions and limits; every change is persisted at once.
// Until the management API is merged, some of these have no caller outside tests.
#[allow(dead_code)]
impl Access {
    /// Open connections: (user, vhost) of each, for the management layer's counts.
    pub(crate) fn connections(&self) -> Vec<(ConnId, String, String)> {
        self.conns()
            .iter()
            .map(|(id, c)| (*id, c.user.clone(), c.vhost.clone()))
            .collect()
    }

    // ----- users ----------------------------------------------------------------------------

    /// Every user.
    pub(crate) fn users(&self) -> Vec<User> {
        self.read().users.values().cloned().collect()
    }

    /// One user.
    pub(crate) fn user(&self, name: &str) -> Option<User> {
        self.read().users.get(name).cloned()
    }

    /// A published message's `user-id` property against the publishing user: equal, or the
    /// user has the `impersonator` tag (`rabbit_channel:check_user_id_header`); otherwise
    /// RabbitMQ's 406 text.
    pub(crate) fn check_user_id(&self, user: &str, claimed: &str) -> Result<(), AmqpError> {
        if claimed == user
            || self
                .read()
                .users
                .get(user)
                .is_some_and(|u| u.tags.iter().any(|t| t == "impersonator"))
        {
            return Ok(());
        }
        Err(AmqpError::precondition(format!(
            "user_id property set to '{claimed}' but authenticated user was '{user}'"
        )))
    }

    /// Creates or replaces a user (limits are kept); returns whether it was created.
    pub(crate) fn put_user(&self, spec: UserSpec) -> Result<bool, AccessError> {
        self.change(|r| {
            let old = r.users.get(&spec.name);
            let (hash, hashing) = match spec.password {
                PasswordSpec::None => (String::new(), password::Hashing::Sha256),
                PasswordSpec::Clear(p) => (
                    password::hash(password::Hashing::Sha256, &p),
                    password::Hashing::Sha256,
                ),
                PasswordSpec::Hash(h, alg) => {
                    let alg = match alg.as_deref() {
                        None => password::Hashing::Sha256,
                        Some(n) => password::Hashing::from_name(n).ok_or_else(|| {
                            AccessError::Invalid(format!("unsupported hashing algorithm '{n}'"))
                        })?,
                    };
                    if !password::well_formed(alg, &h) {
                        return Err(AccessError::Invalid("invalid password_hash".into()));
                    }
                    (h, alg)
                }
                PasswordSpec::Keep => old
                    .map(|u| (u.password_hash.clone(), u.hashing))
                    .unwrap_or_default(),
            };
            let limits = old.map(|u| u.limits).unwrap_or_default();
            let created = old.is_none();
            r.users.insert(
                spec.name.clone(),
                User {
                    name: spec.name,
                    password_hash: hash,
                    hashing,
                    tags: spec.tags,
                    limits,
                },
            );
            Ok(created)
        })
    }

    /// Deletes a user with their permissions, and closes their connections ("user 'u' is
    /// deleted", as RabbitMQ's connection tracking does).
    pub(crate) fn delete_user(&self, name: &str) -> Result<(), AccessError> {
        self.change(|r| {
            r.remove_user(name)
                .then_some(())
                .ok_or_else(|| AccessError::NotFound(format!("no user '{name}'")))
        })?;
        self.close_where(&format!("user '{name}' is deleted"), |c| c.user == name);
        Ok(())
    }

    /// Sets a user's limits.
    pub(crate) fn set_user_limits(
        &self,
        name: &str,
        limits: UserLimits,
    ) -> Result<(), AccessError> {
        self.change(|r| {
            let u = r
                .users
                .get_mut(name)
                .ok_or_else(|| AccessError::NotFound(format!("no user '{name}'")))?;
            u.limits = limits;
            Ok(())
        })
    }

    // ----- vhosts ---------------------------------------------------------------------------

    /// Every vhost.
    pub(crate) fn vhosts(&self) -> Vec<VhostInfo> {
        self.read().vhosts.values().cloned().collect()
    }

    /// One vhost.
    pub(crate) fn vhost(&self, name: &str) -> Option<VhostInfo> {
        self.read().vhosts.get(name).cloned()
    }

    /// Creates a vhost (with RabbitMQ's predeclared exchanges) or updates its metadata
    /// (its limits are kept); returns whether it was created.
    pub(crate) fn put_vhost(
        &self,
        state: &StateLock,
        info: VhostInfo,
    ) -> Result<bool, AccessError> {
        let name = info.name.clone();
        let created = self.change(|r| {
            let limits = r.vhosts.get(&name).map(|v| v.limits).unwrap_or_default();
            Ok(r.vhosts
                .insert(name.clone(), VhostInfo { limits, ..info })
                .is_none())
        })?;
        state.lock().add_vhost(&name);
        Ok(created)
    }

    /// Deletes a vhost: refuses new connections to it at once, closes its connections
    /// (320 "vhost 'v' is down", as RabbitMQ 3.10 says), waits (bounded) until they are gone, then deletes
    /// everything in it (queues with their messages, exchanges, bindings).
    pub(crate) async fn delete_vhost(
        &self,
        state: &StateLock,
        name: &str,
    ) -> Result<(), AccessError> {
        self.change(|r| {
            r.remove_vhost(name)
                .then_some(())
                .ok_or_else(|| AccessError::NotFound(format!("no vhost '{name}'")))
        })?;
        // RabbitMQ 3.10 stops the vhost before it deletes it, so its connections hear that
        // it "is down" (rabbit_connection_tracking's vhost_down) rather than "is deleted".
        self.close_where(&format!("vhost '{name}' is down"), |c| c.vhost == name);
        let wait = async {
            loop {
                let gone = self.gone.notified();
                if !self.conns().values().any(|c| c.vhost == name) {
                    break;
                }
                gone.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .is_err()
        {
            tracing::warn!(
                vhost = name,
                "connections of a deleted vhost did not close in time"
            );
        }
        state.lock().delete_vhost(name);
        Ok(())
    }

    /// Sets a vhost's limits.
    pub(crate) fn set_vhost_limits(
        &self,
        name: &str,
        limits: VhostLimits,
    ) -> Result<(), AccessError> {
        self.change(|r| {
            let v = r
                .vhosts
                .get_mut(name)
                .ok_or_else(|| AccessError::NotFound(format!("no vhost '{name}'")))?;
            v.limits = limits;
            Ok(())
        })
    }

    // ----- permissions ----------------------------------------------------------------------

    /// Every permission: (user, vhost, permission).
    pub(crate) fn permissions(&self) -> Vec<(String, String, Permission)> {
        self.read()
            .permissions
            .iter()
            .map(|((u, v), p)| (u.clone(), v.clone(), p.clone()))
            .collect()
    }

    /// Sets a user's configure, write and read patterns in a vhost (both must exist).
    pub(crate) fn set_permission(
        &self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<(), AccessError> {
        let p = Permission {
            configure: Pattern::new(configure).map_err(AccessError::Invalid)?,
            write: Pattern::new(write).map_err(AccessError::Invalid)?,
            read: Pattern::new(read).map_err(AccessError::Invalid)?,
        };
        self.change(|r| {
            exists(r, user, vhost)?;
            r.permissions.insert((user.into(), vhost.into()), p);
            Ok(())
        })
    }

    /// Removes a user's permissions in a vhost.
    pub(crate) fn clear_permission(&self, user: &str, vhost: &str) -> Result<(), AccessError> {
        self.change(|r| {
            r.permissions
                .remove(&(user.into(), vhost.into()))
                .map(|_| ())
                .ok_or_else(|| {
                    AccessError::NotFound(format!(
                        "no permissions for user '{user}' in vhost '{vhost}'"
                    ))
                })
        })
    }

    /// Every topic permission: (user, vhost, exchange, permission).
    pub(crate) fn topic_permissions(&self) -> Vec<(String, String, String, TopicPermission)> {
        self.read()
            .topic_permissions
            .iter()
            .map(|((u, v, x), p)| (u.clone(), v.clone(), x.clone(), p.clone()))
            .collect()
    }

    /// Sets a user's write and read routing-key patterns on a topic exchange in a vhost.
    pub(crate) fn set_topic_permission(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        write: &str,
        read: &str,
    ) -> Result<(), AccessError> {
        let p = TopicPermission {
            write: Pattern::new(write).map_err(AccessError::Invalid)?,
            read: Pattern::new(read).map_err(AccessError::Invalid)?,
        };
        self.change(|r| {
            exists(r, user, vhost)?;
            r.topic_permissions
                .insert((user.into(), vhost.into(), exchange.into()), p);
            Ok(())
        })
    }

    /// Removes a user's topic permissions in a vhost: on one exchange, or on all (None).
    pub(crate) fn clear_topic_permission(
        &self,
        user: &str,
        vhost: &str,
        exchange: Option<&str>,
    ) -> Result<(), AccessError> {
        self.change(|r| {
            let before = r.topic_permissions.len();
            r.topic_permissions.retain(|(u, v, x), _| {
                !(u == user && v == vhost && exchange.is_none_or(|e| e == x))
            });
            if r.topic_permissions.len() == before {
                return Err(AccessError::NotFound(format!(
                    "no topic permissions for user '{user}' in vhost '{vhost}'"
                )));
            }
            Ok(())
        })
    }

    // ----- definitions ----------------------------------------------------------------------

    /// Users, vhosts, permissions, topic permissions and vhost limits as RabbitMQ's
    /// definitions JSON (merge it with the topology's own export).
    pub(crate) fn export(&self) -> Value {
        json::export(&self.read())
    }

    /// Imports the access entities of a definitions document: all or nothing. New vhosts are
    /// created in `state` too (their queues, exchanges and bindings are the caller's part).
    pub(crate) fn import(&self, state: &StateLock, defs: &Value) -> Result<(), AccessError> {
        let names = self.change(|r| {
            json::import(r, defs).map_err(AccessError::Invalid)?;
            Ok(r.vhosts.keys().cloned().collect::<Vec<_>>())
        })?;
        let mut st = state.lock();
        for n in names {
            st.add_vhost(&n);
        }
        Ok(())
    }
}

/// The vhost must exist and be under its connection limit (530 texts as RabbitMQ's).
fn vhost_limit(
    r: &Registry,
    conns: &HashMap<ConnId, Tracked>,
    user: &str,
    vhost: &str,
) -> Result<(), AmqpError> {
    let Some(info) = r.vhosts.get(vhost) else {
        return Err(AmqpError::new(
            Code::NotAllowed,
            format!("vhost {vhost} not found"),
        ));
    };
    if let Some(limit) = info.limits.max_connections {
        let n = conns.values().filter(|c| c.vhost == vhost).count() as u64;
        if n >= limit {
            return Err(AmqpError::new(
                Code::NotAllowed,
                format!("access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached"),
            ));
        }
    }
    Ok(())
}

fn exists(r: &Registry, user: &str, vhost: &str) -> Result<(), AccessError> {
    if !r.users.contains_key(user) {
        return Err(AccessError::NotFound(format!("no user '{user}'")));
    }
    if !r.vhosts.contains_key(vhost) {
        return Err(AccessError::NotFound(format!("no vhost '{vhost}'")));
    }
    Ok(())
}
