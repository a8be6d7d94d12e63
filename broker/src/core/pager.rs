//! Paging: message data that does not fit the in-memory budget waits on disk.
//!
//! When the ready messages of all queues hold more bytes than the budget, newly queued messages
//! are written to append-only page files and the queue keeps only a small reference. A paged
//! message is read back when it is delivered (or dead-lettered); a page file is deleted once
//! nothing refers to it any more. Pages are a cache, not durability: they are not fsynced and
//! are discarded at startup (persistent messages live in the store, see `store.rs`).

use crate::core::message::Message;
use bytes::{Buf, BufMut, Bytes};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Page files roll over at this size.
const PAGE_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// Where a paged message lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageRef {
    file: u32,
    offset: u64,
    len: u32,
}

/// The page files of one broker.
#[derive(Debug)]
pub(crate) struct Pager {
    dir: PathBuf,
    current: u32,
    writer: Option<File>,
    size: u64,
    live: HashMap<u32, u64>,
    readers: HashMap<u32, File>,
}

impl Pager {
    /// A pager writing under `dir` (created now, emptied of old pages).
    pub(crate) fn new(dir: PathBuf) -> Pager {
        let _ = fs::remove_dir_all(&dir);
        Pager {
            dir,
            current: 0,
            writer: None,
            size: 0,
            live: HashMap::new(),
            readers: HashMap::new(),
        }
    }

    fn path(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{n:08}.page"))
    }

    /// Writes a message out; None if the disk refused (the caller keeps it in memory).
    pub(crate) fn write(&mut self, m: &Message) -> Option<PageRef> {
        if self.writer.is_none() || self.size >= PAGE_FILE_SIZE {
            self.current += 1;
            self.size = 0;
            fs::create_dir_all(&self.dir).ok()?;
            let f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(self.path(self.current))
                .map_err(|e| tracing::error!(error = %e, "cannot create page file"))
                .ok()?;
            self.writer = Some(f);
        }
        let mut rec = Vec::with_capacity(16 + m.header.len() + m.body.len());
        crate::core::props::put_short_str(&mut rec, &m.exchange);
        crate::core::props::put_short_str(&mut rec, &m.routing_key);
        rec.put_u32(m.header.len() as u32);
        rec.extend_from_slice(&m.header);
        rec.extend_from_slice(&m.body);
        let w = self.writer.as_mut()?;
        if let Err(e) = w.write_all_at(&rec, self.size) {
            tracing::error!(error = %e, "cannot write page file; keeping message in memory");
            return None;
        }
        let r = PageRef {
            file: self.current,
            offset: self.size,
            len: rec.len() as u32,
        };
        self.size += rec.len() as u64;
        *self.live.entry(self.current).or_insert(0) += 1;
        Some(r)
    }

    /// Another queue refers to the same paged message.
    pub(crate) fn retain(&mut self, r: PageRef) {
        *self.live.entry(r.file).or_insert(0) += 1;
    }

    /// Reads a paged message back.
    pub(crate) fn read(&mut self, r: PageRef) -> Option<Message> {
        if !self.readers.contains_key(&r.file) {
            let f = File::open(self.path(r.file)).ok()?;
            self.readers.insert(r.file, f);
        }
        let f = self.readers.get(&r.file)?;
        let mut buf = vec![0u8; r.len as usize];
        if let Err(e) = f.read_exact_at(&mut buf, r.offset) {
            tracing::error!(error = %e, "cannot read page file");
            return None;
        }
        let mut b = Bytes::from(buf);
        let take_str = |b: &mut Bytes| -> Option<String> {
            let n = *b.first()? as usize;
            b.advance(1);
            if b.len() < n {
                return None;
            }
            String::from_utf8(b.split_to(n).to_vec()).ok()
        };
        let exchange = take_str(&mut b)?;
        let routing_key = take_str(&mut b)?;
        if b.len() < 4 {
            return None;
        }
        let hlen = b.get_u32() as usize;
        if b.len() < hlen {
            return None;
        }
        let header = b.split_to(hlen);
        Message::new(exchange, routing_key, header, b)
    }

    /// Forgets a paged message; deletes its file when nothing else lives there.
    pub(crate) fn release(&mut self, r: PageRef) {
        let Some(n) = self.live.get_mut(&r.file) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.live.remove(&r.file);
            if r.file == self.current {
                // Nothing lives in the file being written: start it over instead of opening a
                // new one (consumers keeping up with a paging queue would otherwise churn files).
                if let Some(w) = &self.writer {
                    if w.set_len(0).is_ok() {
                        self.size = 0;
                        return;
                    }
                }
                self.writer = None;
            }
            self.readers.remove(&r.file);
            let _ = fs::remove_file(self.path(r.file));
        }
    }
}

impl Drop for Pager {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::AMQPProperties;

    #[test]
    fn round_trip_and_file_reclaimed() {
        let dir = std::env::temp_dir().join(format!("warren-pager-{}", uuid::Uuid::new_v4()));
        let mut p = Pager::new(dir.clone());
        let m = Message::with_properties(
            "x".into(),
            "rk".into(),
            &AMQPProperties::default().with_priority(3),
            Bytes::from_static(b"hello"),
        );
        let a = p.write(&m).unwrap();
        let b = p.write(&m).unwrap();
        let back = p.read(b).unwrap();
        assert_eq!((&back.body[..], back.priority), (&b"hello"[..], Some(3)));
        assert_eq!(back.routing_key, "rk");
        p.release(a);
        assert!(dir.join("00000001.page").exists());
        p.release(b);
        // Nothing lives in the current file any more: it starts over, empty.
        assert_eq!(fs::metadata(dir.join("00000001.page")).unwrap().len(), 0);
        let c = p.write(&m).unwrap();
        assert_eq!(&p.read(c).unwrap().body[..], b"hello");
    }
}
