//! The retained-message store: per vhost, by MQTT topic, looked up by the exact topic filter
//! of a SUBSCRIBE, as RabbitMQ's retainer does (a wildcard filter gets only a message retained
//! under that very filter).
//!
//! With a data directory the messages survive a restart, as RabbitMQ keeps them on disk per
//! vhost. Each vhost's messages are one file, `mqtt-retained/<md5 of the vhost name>.json`
//! (hashed as RabbitMQ names its per-vhost files, so any vhost name makes a valid file name;
//! the name itself is inside), loaded at start and rewritten atomically (temporary file,
//! fsync, rename) after a change. A vhost without retained messages has no file. Without a
//! data directory (`--memory-only`, an embedded broker without one) they are kept in memory
//! only.
//!
//! Why whole files, rewritten: a retained message is the last value of a topic, so a vhost
//! holds at most one per topic in use and its file stays small; and the writes are coalesced,
//! so their rate is low however fast clients retain. A change only marks its vhost dirty and
//! wakes one writer thread; each round the writer writes every dirty vhost's current messages
//! once. A round lasts as long as its writes and fsyncs, so the disk sees at most one write per
//! vhost per round, and publishers never wait for the disk (a PUBACK does not wait for the
//! retained copy, as in RabbitMQ, whose retainer takes it asynchronously). A clean stop waits
//! for the writer ([`RetainedStore::flush`]); a crash may lose what was retained during the
//! last round, as RabbitMQ's store may lose what it had not synced yet (it syncs every 2 s).

use super::topic::to_mqtt;
use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest, Md5};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A retained message: what a new subscriber to its topic is sent.
#[derive(Debug, Clone)]
pub(crate) struct Retained {
    /// The QoS it was published with (0 or 1; QoS 2 was granted as 1).
    pub(crate) qos: u8,
    /// The payload.
    pub(crate) payload: Bytes,
}

/// The folder of the data directory holding the retained messages.
const FOLDER: &str = "mqtt-retained";

/// Retained messages of every vhost, by MQTT topic; on disk too when there is a data directory.
#[derive(Debug, Default)]
pub(crate) struct RetainedStore {
    inner: Arc<Inner>,
    /// The thread writing dirty vhosts to disk (None: memory-only).
    writer: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Inner {
    by_vhost: Mutex<HashMap<String, HashMap<String, Retained>>>,
    /// The folder the files are in (None: memory-only).
    dir: Option<PathBuf>,
    pending: Mutex<Pending>,
    /// Wakes the writer: a vhost became dirty, or the store is dropped.
    wake: Condvar,
    /// Wakes [`RetainedStore::flush`]: a round of writes ended.
    written: Condvar,
}

/// What the writer has to do, and how far it got.
#[derive(Debug, Default)]
struct Pending {
    /// Vhosts changed since the writer last took the set.
    dirty: BTreeSet<String>,
    /// Counts the changes.
    changes: u64,
    /// Every change up to this count is on disk (or its write failed and was logged).
    done: u64,
    /// The store is dropped: write what is dirty, then stop.
    stop: bool,
}

impl Inner {
    fn messages(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, Retained>>> {
        self.by_vhost.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RetainedStore {
    /// The store kept in `data_dir`: loads what an earlier run retained and starts the writer.
    /// Fails on a file that cannot be read or parsed (the data directory is not usable then,
    /// as with a corrupt `access.json`).
    pub(crate) fn open(data_dir: &Path) -> Result<RetainedStore, String> {
        let dir = data_dir.join(FOLDER);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let by_vhost = load(&dir)?;
        let n: usize = by_vhost.values().map(HashMap::len).sum();
        if n > 0 {
            tracing::info!(dir = %dir.display(), messages = n, "recovered MQTT retained messages");
        }
        let inner = Arc::new(Inner {
            by_vhost: Mutex::new(by_vhost),
            dir: Some(dir),
            ..Default::default()
        });
        let writer = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("warren-mqtt-retained".into())
                .spawn(move || write_loop(&inner))
                .map_err(|e| format!("cannot start the retained-message writer: {e}"))?
        };
        Ok(RetainedStore {
            inner,
            writer: Some(writer),
        })
    }

    /// Retains `msg` under `topic` (an empty payload clears the topic, as MQTT says).
    pub(crate) fn retain(&self, vhost: &str, topic: &str, msg: Retained) {
        let key = to_mqtt(topic);
        {
            let mut all = self.inner.messages();
            if msg.payload.is_empty() {
                let Some(topics) = all.get_mut(vhost) else {
                    return;
                };
                if topics.remove(&key).is_none() {
                    return; // nothing to clear: nothing to write
                }
                if topics.is_empty() {
                    all.remove(vhost);
                }
            } else {
                all.entry(vhost.to_string()).or_default().insert(key, msg);
            }
        }
        if self.writer.is_some() {
            let mut pending = self.inner.pending();
            pending.dirty.insert(vhost.to_string());
            pending.changes += 1;
            self.inner.wake.notify_one();
        }
    }

    /// The message retained under exactly this topic filter, if any.
    pub(crate) fn fetch(&self, vhost: &str, filter: &str) -> Option<(String, Retained)> {
        let key = to_mqtt(filter);
        let all = self.inner.messages();
        let msg = all.get(vhost)?.get(&key)?.clone();
        Some((key, msg))
    }

    /// Blocks until every change made so far is on disk (at once when memory-only).
    pub(crate) fn flush(&self) {
        if self.writer.is_none() {
            return;
        }
        let mut pending = self.inner.pending();
        let target = pending.changes;
        while pending.done < target {
            if self.writer.as_ref().is_some_and(|w| w.is_finished()) {
                return; // it panicked: nothing more will be written
            }
            let wait = self
                .inner
                .written
                .wait_timeout(pending, Duration::from_secs(1));
            pending = wait.unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

impl Drop for RetainedStore {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            self.inner.pending().stop = true;
            self.inner.wake.notify_one();
            let _ = writer.join();
        }
    }
}

/// The writer thread: each round takes the dirty vhosts and writes each one's current
/// messages; stops once the store is dropped and nothing is dirty.
fn write_loop(inner: &Inner) {
    let Some(dir) = &inner.dir else { return };
    loop {
        let (vhosts, upto) = {
            let mut pending = inner.pending();
            while pending.dirty.is_empty() && !pending.stop {
                pending = inner.wake.wait(pending).unwrap_or_else(|p| p.into_inner());
            }
            if pending.dirty.is_empty() {
                return;
            }
            (std::mem::take(&mut pending.dirty), pending.changes)
        };
        for vhost in vhosts {
            // A snapshot under the lock (payloads are shared, not copied); the disk after it.
            let mut messages: Vec<(String, Retained)> = inner
                .messages()
                .get(&vhost)
                .map(|topics| topics.iter().map(|(t, m)| (t.clone(), m.clone())).collect())
                .unwrap_or_default();
            messages.sort_by(|a, b| a.0.cmp(&b.0));
            let path = dir.join(file_name(&vhost));
            if let Err(e) = write_vhost(&path, &vhost, &messages) {
                tracing::error!(error = %e, file = %path.display(), %vhost,
                    "cannot save MQTT retained messages");
            }
        }
        let mut pending = inner.pending();
        pending.done = upto;
        inner.written.notify_all();
    }
}

/// A vhost's file: `<md5 of its name in hex>.json`.
fn file_name(vhost: &str) -> String {
    let digest = Md5::digest(vhost.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.json")
}

/// Writes a vhost's messages to `path` atomically, or removes the file when there are none.
fn write_vhost(path: &Path, vhost: &str, messages: &[(String, Retained)]) -> std::io::Result<()> {
    if messages.is_empty() {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        return Ok(());
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let list: Vec<Value> = messages
        .iter()
        .map(|(topic, m)| json!({"topic": topic, "qos": m.qos, "payload": b64.encode(&m.payload)}))
        .collect();
    let value = json!({"vhost": vhost, "messages": list});
    crate::core::store::write_json_atomically(path, &value)
}

/// Reads every vhost's file in `dir` (leftover temporary files of an interrupted write are
/// removed: the file they were to replace is intact).
fn load(dir: &Path) -> Result<HashMap<String, HashMap<String, Retained>>, String> {
    let cannot = |path: &Path, e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut out: HashMap<String, HashMap<String, Retained>> = HashMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| cannot(dir, e))? {
        let path = entry.map_err(|e| cannot(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".json.tmp") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        let text = std::fs::read(&path).map_err(|e| cannot(&path, e))?;
        let (vhost, topics) =
            parse(&text).map_err(|e| format!("{} is corrupt: {e}", path.display()))?;
        if !topics.is_empty() {
            out.entry(vhost).or_default().extend(topics);
        }
    }
    Ok(out)
}

/// A vhost's file: its name and messages.
fn parse(text: &[u8]) -> Result<(String, HashMap<String, Retained>), String> {
    let value: Value = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    let vhost = value["vhost"].as_str().ok_or("no vhost name")?.to_string();
    let list = value["messages"].as_array().ok_or("no messages list")?;
    let mut topics = HashMap::with_capacity(list.len());
    for m in list {
        let topic = m["topic"].as_str().ok_or("a message without a topic")?;
        let qos = match m["qos"].as_u64() {
            Some(q @ (0 | 1)) => q as u8,
            _ => return Err(format!("message on {topic:?}: qos is not 0 or 1")),
        };
        let payload = base64::engine::general_purpose::STANDARD
            .decode(m["payload"].as_str().unwrap_or_default())
            .map_err(|e| format!("message on {topic:?}: payload: {e}"))?;
        let payload = Bytes::from(payload);
        topics.insert(topic.to_string(), Retained { qos, payload });
    }
    Ok((vhost, topics))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(p: &'static [u8]) -> Retained {
        Retained {
            qos: 1,
            payload: Bytes::from_static(p),
        }
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("warren-retained-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn retained_messages_by_exact_topic_and_cleared_by_an_empty_payload() {
        let store = RetainedStore::default();
        store.retain("/", "a/b", msg(b"1"));
        assert_eq!(store.fetch("/", "a/b").unwrap().1.payload, "1");
        assert!(store.fetch("/", "a/+").is_none());
        assert!(store.fetch("other", "a/b").is_none());
        store.retain("/", "a/b", msg(b""));
        assert!(store.fetch("/", "a/b").is_none());
    }

    #[test]
    fn kept_in_the_data_directory_across_stores() {
        let dir = temp_dir();
        let store = RetainedStore::open(&dir).unwrap();
        store.retain("/", "a/b", msg(b"1"));
        store.retain("/", "a/c", msg(b"\x00\xff binary"));
        store.retain(
            "odd/vhost:name",
            "x",
            Retained {
                qos: 0,
                payload: Bytes::from_static(b"2"),
            },
        );
        store.retain("gone", "y", msg(b"3"));
        store.retain("gone", "y", msg(b""));
        store.flush();
        let files = std::fs::read_dir(dir.join(FOLDER)).unwrap().count();
        assert_eq!(files, 2, "one file per vhost holding retained messages");
        drop(store);

        let store = RetainedStore::open(&dir).unwrap();
        assert_eq!(store.fetch("/", "a/b").unwrap().1.payload, "1");
        assert_eq!(
            store.fetch("/", "a/c").unwrap().1.payload,
            &b"\x00\xff binary"[..]
        );
        let (topic, m) = store.fetch("odd/vhost:name", "x").unwrap();
        assert_eq!((topic.as_str(), m.qos, &m.payload[..]), ("x", 0, &b"2"[..]));
        assert!(store.fetch("gone", "y").is_none());
        // Clearing the last message of a vhost removes its file; dropping the store writes
        // what is pending.
        store.retain("odd/vhost:name", "x", msg(b""));
        drop(store);
        assert_eq!(std::fs::read_dir(dir.join(FOLDER)).unwrap().count(), 1);
        let store = RetainedStore::open(&dir).unwrap();
        assert!(store.fetch("odd/vhost:name", "x").is_none());
        assert_eq!(store.fetch("/", "a/b").unwrap().1.payload, "1");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = temp_dir();
        std::fs::create_dir_all(dir.join(FOLDER)).unwrap();
        let file = dir.join(FOLDER).join(file_name("/"));
        std::fs::write(
            &file,
            r#"{"vhost": "/", "messages": [{"topic": "a", "qos": 2, "payload": ""}]}"#,
        )
        .unwrap();
        let err = RetainedStore::open(&dir).unwrap_err();
        assert!(
            err.contains(&file.display().to_string()) && err.contains("qos"),
            "{err}"
        );
        std::fs::write(&file, "{").unwrap();
        let err = RetainedStore::open(&dir).unwrap_err();
        assert!(err.contains("is corrupt"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
