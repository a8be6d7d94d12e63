//! Durability: definitions (durable exchanges, queues, bindings) and persistent messages in
//! durable queues, kept in a data directory.
//!
//! - `definitions.json` is rewritten atomically (temp file, fsync, rename) whenever a durable
//!   entity changes; declarations are rare, so simplicity wins.
//! - Persistent messages go to append-only segment files `msgs/NNNNNNNN.seg`, one record per
//!   (queue, message); acknowledgements, purges and deletes append the record id to the segment's
//!   `.ack` file. A segment whose every record is acknowledged is deleted, so space is reclaimed
//!   as consumers keep up (the LavinMQ / classic-queue-v2 model).
//! - Group commit: one writer thread takes everything appended since its last round, writes it,
//!   fsyncs each touched file once, and only then runs the completions (publisher confirms). A
//!   confirmed message is on disk; throughput stays high because one fsync covers many messages.
//! - Recovery reads segments in order, skips acknowledged records, and stops at the first torn or
//!   corrupt record of a file (CRC and length checked), truncating the damage away and logging it.

use crate::core::message::Message;
use bytes::{Buf, BufMut, Bytes};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// Segment files roll over at this size.
const SEGMENT_SIZE: u64 = 16 * 1024 * 1024;
const RECORD_MAGIC: u8 = 0x57;

/// Where a persisted message copy lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreRef {
    /// Segment number.
    pub(crate) segment: u32,
    /// Record id (unique across the store's lifetime).
    pub(crate) id: u64,
}

/// Something to do after the writes appended so far are on disk.
pub(crate) type Completion = Box<dyn FnOnce() + Send>;

enum Op {
    Append(PathBuf, Vec<u8>),
    Delete(PathBuf),
    /// A message record cancelled before it was written (see [`Store::remove`]).
    Skipped,
}

#[derive(Default)]
struct Pending {
    ops: Vec<Op>,
    /// Message records still in `ops` (not yet taken by the writer): record id -> position.
    unwritten: HashMap<u64, usize>,
    completions: Vec<Completion>,
    stop: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

/// Segment bookkeeping, owned by the broker state (called under its lock).
struct Segments {
    dir: PathBuf,
    current: u32,
    current_size: u64,
    next_id: u64,
    /// Unacknowledged records per segment.
    live: BTreeMap<u32, u64>,
}

impl Segments {
    /// Forgets an emptied segment: the ops deleting its file, then its ack file (in this order,
    /// so a crash in between never leaves a segment without its acks).
    fn retire(&mut self, n: u32) -> [Op; 2] {
        self.live.remove(&n);
        [
            Op::Delete(seg_path(&self.dir, n)),
            Op::Delete(ack_path(&self.dir, n)),
        ]
    }
}

/// The message store of one broker.
pub(crate) struct Store {
    segments: Mutex<Segments>,
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
    definitions: PathBuf,
    /// Held (locked) for the store's life.
    _lock: File,
}

/// A message recovered from disk.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Its queue.
    pub(crate) vhost: String,
    /// Its queue's name.
    pub(crate) queue: String,
    /// The message.
    pub(crate) message: Message,
    /// Where it lives.
    pub(crate) at: StoreRef,
}

fn seg_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

fn ack_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.ack"))
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.put_u16(b.len() as u16);
    out.extend_from_slice(b);
}

fn encode_record(id: u64, vhost: &str, queue: &str, m: &Message) -> Vec<u8> {
    let mut payload = Vec::with_capacity(64 + m.header.len() + m.body.len());
    payload.put_u64(id);
    put_str16(&mut payload, vhost);
    put_str16(&mut payload, queue);
    crate::core::props::put_short_str(&mut payload, &m.exchange);
    crate::core::props::put_short_str(&mut payload, &m.routing_key);
    payload.put_u32(m.header.len() as u32);
    payload.extend_from_slice(&m.header);
    payload.put_u32(m.body.len() as u32);
    payload.extend_from_slice(&m.body);
    let mut rec = Vec::with_capacity(payload.len() + 9);
    rec.put_u8(RECORD_MAGIC);
    rec.put_u32(payload.len() as u32);
    rec.put_u32(crc32fast::hash(&payload));
    rec.extend_from_slice(&payload);
    rec
}

fn get_str(buf: &mut Bytes, len: usize) -> Option<String> {
    if buf.remaining() < len {
        return None;
    }
    String::from_utf8(buf.split_to(len).to_vec()).ok()
}

/// A decoded record: id, vhost, queue, message.
type Record = (u64, String, String, Message);

fn decode_payload(mut p: Bytes) -> Option<Record> {
    if p.remaining() < 8 + 2 {
        return None;
    }
    let id = p.get_u64();
    let n = p.get_u16() as usize;
    let vhost = get_str(&mut p, n)?;
    if p.remaining() < 2 {
        return None;
    }
    let n = p.get_u16() as usize;
    let queue = get_str(&mut p, n)?;
    if p.remaining() < 1 {
        return None;
    }
    let n = p.get_u8() as usize;
    let exchange = get_str(&mut p, n)?;
    if p.remaining() < 1 {
        return None;
    }
    let n = p.get_u8() as usize;
    let routing_key = get_str(&mut p, n)?;
    if p.remaining() < 4 {
        return None;
    }
    let n = p.get_u32() as usize;
    if p.remaining() < n {
        return None;
    }
    let header = p.split_to(n);
    if p.remaining() < 4 {
        return None;
    }
    let n = p.get_u32() as usize;
    if p.remaining() < n {
        return None;
    }
    let body = p.split_to(n);
    let message = Message::new(exchange, routing_key, header, body)?;
    Some((id, vhost, queue, message))
}

/// Reads a segment; returns its valid records and the length of the valid prefix.
fn read_segment(path: &Path) -> std::io::Result<(Vec<Record>, u64, u64)> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let total = data.len() as u64;
    let mut buf = Bytes::from(data);
    let mut out = Vec::new();
    let mut valid = 0u64;
    while buf.remaining() >= 9 {
        let magic = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        let crc = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
        if magic != RECORD_MAGIC || buf.remaining() < 9 + len {
            break;
        }
        let payload = buf.slice(9..9 + len);
        if crc32fast::hash(&payload) != crc {
            break;
        }
        let Some(rec) = decode_payload(payload) else {
            break;
        };
        buf.advance(9 + len);
        valid += 9 + len as u64;
        out.push(rec);
    }
    Ok((out, valid, total))
}

fn read_acks(path: &Path) -> HashSet<u64> {
    let mut data = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut data);
    }
    // A torn last id (fewer than 8 bytes) is ignored: it was never confirmed to anyone.
    data.chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn writer_loop(shared: Arc<Shared>) {
    let mut files: HashMap<PathBuf, File> = HashMap::new();
    loop {
        let (ops, completions, stop) = {
            let mut p = shared.pending.lock().expect("store lock");
            while p.ops.is_empty() && p.completions.is_empty() && !p.stop {
                p = shared.wake.wait(p).expect("store lock");
            }
            p.unwritten.clear();
            (
                std::mem::take(&mut p.ops),
                std::mem::take(&mut p.completions),
                p.stop,
            )
        };
        let mut touched: Vec<PathBuf> = Vec::new();
        for op in ops {
            match op {
                Op::Append(path, bytes) => {
                    let file = match files.get_mut(&path) {
                        Some(f) => f,
                        None => match OpenOptions::new().create(true).append(true).open(&path) {
                            Ok(f) => files.entry(path.clone()).or_insert(f),
                            Err(e) => {
                                tracing::error!(path = %path.display(), error = %e, "cannot open store file");
                                continue;
                            }
                        },
                    };
                    if let Err(e) = file.write_all(&bytes) {
                        tracing::error!(path = %path.display(), error = %e, "store write failed");
                    }
                    if !touched.contains(&path) {
                        touched.push(path);
                    }
                }
                Op::Delete(path) => {
                    files.remove(&path);
                    touched.retain(|p| p != &path);
                    let _ = fs::remove_file(&path);
                }
                Op::Skipped => {}
            }
        }
        for path in &touched {
            if let Some(f) = files.get(path) {
                if let Err(e) = f.sync_data() {
                    tracing::error!(path = %path.display(), error = %e, "fsync failed");
                }
            }
        }
        for c in completions {
            c();
        }
        if stop {
            return;
        }
        // Keep only a handful of open files: the current segment and its ack file, mostly.
        if files.len() > 64 {
            files.clear();
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, recovering what it holds.
    pub(crate) fn open(
        dir: &Path,
    ) -> std::io::Result<(Store, Option<serde_json::Value>, Vec<Recovered>)> {
        let msgs = dir.join("msgs");
        fs::create_dir_all(&msgs)?;
        // One broker per data directory: a second one would interleave segments and acks.
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        if !fs4::fs_std::FileExt::try_lock_exclusive(&lock)? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "another broker is using this data directory",
            ));
        }
        let definitions = dir.join("definitions.json");
        let defs = match fs::read(&definitions) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::error!(error = %e, "definitions.json is corrupt; starting without definitions");
                    None
                }
            },
            Err(_) => None,
        };
        let mut numbers: Vec<u32> = fs::read_dir(&msgs)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        let mut recovered = Vec::new();
        let mut live = BTreeMap::new();
        let mut max_id = 0u64;
        for n in &numbers {
            let path = seg_path(&msgs, *n);
            let (records, valid, total) = read_segment(&path)?;
            if valid < total {
                tracing::warn!(
                    segment = %path.display(),
                    dropped_bytes = total - valid,
                    "torn or corrupt data at the end of a segment; recovered everything before it"
                );
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(valid)?;
                f.sync_all()?;
            }
            let acks = read_acks(&ack_path(&msgs, *n));
            let mut count = 0;
            for (id, vhost, queue, message) in records {
                max_id = max_id.max(id);
                if acks.contains(&id) {
                    continue;
                }
                count += 1;
                recovered.push(Recovered {
                    vhost,
                    queue,
                    message,
                    at: StoreRef { segment: *n, id },
                });
            }
            if count == 0 {
                let _ = fs::remove_file(&path);
                let _ = fs::remove_file(ack_path(&msgs, *n));
            } else {
                live.insert(*n, count);
            }
        }
        let current = numbers.last().map_or(1, |n| n + 1);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("warren-store".into())
                .spawn(move || writer_loop(shared))?
        };
        Ok((
            Store {
                segments: Mutex::new(Segments {
                    dir: msgs,
                    current,
                    current_size: 0,
                    next_id: max_id + 1,
                    live,
                }),
                shared,
                writer: Some(writer),
                definitions,
                _lock: lock,
            },
            defs,
            recovered,
        ))
    }

    fn push(&self, op: Op) {
        let mut p = self.shared.pending.lock().expect("store lock");
        p.ops.push(op);
        drop(p);
        self.shared.wake.notify_one();
    }

    /// Appends a persistent message copy for `queue`; returns where it lives.
    pub(crate) fn append(&self, vhost: &str, queue: &str, m: &Message) -> StoreRef {
        let mut s = self.segments.lock().expect("segments lock");
        if s.current_size >= SEGMENT_SIZE {
            let old = s.current;
            s.current += 1;
            s.current_size = 0;
            if s.live.get(&old) == Some(&0) {
                for op in s.retire(old) {
                    self.push(op);
                }
            }
        }
        let id = s.next_id;
        s.next_id += 1;
        let rec = encode_record(id, vhost, queue, m);
        s.current_size += rec.len() as u64;
        let seg = s.current;
        *s.live.entry(seg).or_insert(0) += 1;
        let path = seg_path(&s.dir, seg);
        drop(s);
        let mut p = self.shared.pending.lock().expect("store lock");
        let at = p.ops.len();
        p.ops.push(Op::Append(path, rec));
        p.unwritten.insert(id, at);
        drop(p);
        self.shared.wake.notify_one();
        StoreRef { segment: seg, id }
    }

    /// Records that a persisted copy is gone (acked, purged, deleted, dead-lettered).
    ///
    /// A copy whose record the writer has not taken yet is simply never written, and needs no
    /// acknowledgement record either: as in RabbitMQ, a persistent message delivered and
    /// settled before its write was due costs no disk I/O. A publisher confirm waiting for the
    /// same round still comes after it, and the message it confirms has been settled.
    pub(crate) fn remove(&self, at: StoreRef) {
        let mut s = self.segments.lock().expect("segments lock");
        let path = ack_path(&s.dir, at.segment);
        let emptied = match s.live.get_mut(&at.segment) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        let retired = (emptied && at.segment != s.current).then(|| s.retire(at.segment));
        drop(s);
        let mut p = self.shared.pending.lock().expect("store lock");
        match p.unwritten.remove(&at.id) {
            Some(i) => p.ops[i] = Op::Skipped,
            None => p.ops.push(Op::Append(path, at.id.to_be_bytes().to_vec())),
        }
        p.ops.extend(retired.into_iter().flatten());
        drop(p);
        self.shared.wake.notify_one();
    }

    /// Runs `f` once everything appended so far is on disk.
    pub(crate) fn after_sync(&self, f: Completion) {
        let mut p = self.shared.pending.lock().expect("store lock");
        p.completions.push(f);
        drop(p);
        self.shared.wake.notify_one();
    }

    /// Atomically replaces the durable definitions.
    pub(crate) fn save_definitions(&self, defs: &serde_json::Value) {
        if let Err(e) = write_json_atomically(&self.definitions, defs) {
            tracing::error!(error = %e, "cannot save definitions");
        }
    }
}

/// Atomically replaces a JSON file: written to a temporary file, synced, renamed over the old
/// one, and the directory synced, so a crash leaves either the old or the new text.
pub(crate) fn write_json_atomically(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(serde_json::to_string_pretty(value)?.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Ok(mut p) = self.shared.pending.lock() {
            p.stop = true;
        }
        self.shared.wake.notify_one();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::AMQPProperties;

    fn msg(body: &'static [u8]) -> Message {
        let properties = AMQPProperties::default().with_delivery_mode(2);
        Message::with_properties("".into(), "q".into(), &properties, Bytes::from_static(body))
    }

    fn sync(store: &Store) {
        let (tx, rx) = std::sync::mpsc::channel();
        store.after_sync(Box::new(move || {
            let _ = tx.send(());
        }));
        rx.recv().unwrap();
    }

    #[test]
    fn recovers_unacked_in_order_and_survives_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("warren-store-{}", uuid::Uuid::new_v4()));
        {
            let (store, _, rec) = Store::open(&dir).unwrap();
            assert!(rec.is_empty());
            let a = store.append("/", "q", &msg(b"a"));
            store.append("/", "q", &msg(b"b"));
            store.append("/", "q", &msg(b"c"));
            store.remove(a);
            sync(&store);
        }
        // Tear the last record in half.
        let seg = seg_path(&dir.join("msgs"), 1);
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (_store, _, rec) = Store::open(&dir).unwrap();
        let bodies: Vec<&[u8]> = rec.iter().map(|r| &r.message.body[..]).collect();
        assert_eq!(bodies, vec![&b"b"[..]]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_data_directory_serves_one_store_at_a_time() {
        let dir = std::env::temp_dir().join(format!("warren-store-lock-{}", std::process::id()));
        let (first, _, _) = Store::open(&dir).expect("first open");
        let err = Store::open(&dir).err().expect("a second open is refused");
        assert_eq!(
            err.to_string(),
            "another broker is using this data directory"
        );
        drop(first);
        Store::open(&dir).expect("free again once the first is gone");
        let _ = fs::remove_dir_all(&dir);
    }
}
