//! What the accept loop and every connection share: the core's state behind its lock, the
//! configuration, the access data (users, permissions), and the resource alarm (memory and disk) that blocks publishers.

use crate::config::{resident_memory, Config};
use crate::core::access::Access;
use crate::core::state::StateLock;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// State shared by the accept loop and every connection.
pub(crate) struct Shared {
    pub(crate) state: StateLock,
    pub(crate) config: Config,
    /// Users, vhosts, permissions and limits.
    pub(crate) access: Access,
    /// Resource alarm: true while publishers must be blocked.
    pub(crate) alarm: watch::Sender<bool>,
    /// The memory watermark in force (adjustable at run time).
    pub(crate) memory_high_watermark: AtomicU64,
    pub(crate) data_dir: Option<PathBuf>,
}

impl Shared {
    /// Re-evaluates the memory and disk alarms.
    pub(crate) fn check_alarms(&self) {
        let mem = resident_memory();
        let limit = self.memory_high_watermark.load(Ordering::Relaxed);
        let mem_alarm = mem > limit;
        let disk_alarm = self.data_dir.as_ref().is_some_and(|d| {
            fs4::available_space(d).is_ok_and(|free| free < self.config.limits.disk_free_limit)
        });
        let alarm = mem_alarm || disk_alarm;
        if *self.alarm.borrow() != alarm {
            if alarm {
                tracing::warn!(
                    resident = mem,
                    watermark = limit,
                    disk_alarm,
                    "resource alarm: blocking publishers"
                );
            } else {
                tracing::info!("resource alarm cleared: unblocking publishers");
            }
            self.alarm.send_replace(alarm);
        }
    }
}
