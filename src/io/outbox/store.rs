//! The outbox's file store (I/O, between the verdict and MQTT out): an append-only file in
//! which an alert is recorded before the input that caused it is acknowledged, marked done
//! when the broker acknowledged the alert, and replayed after a crash. It is what the `outbox`
//! acknowledgement policy needs to PUBACK an input before its alert's PUBACK without giving
//! up at-least-once (edgeHub delivers one message at a time, so every wait before an input's
//! PUBACK is paid once per input). Blocking file calls, no sockets, no async; the connection
//! loop drives it once per turn through [`super::OutboxIo`].
//!
//! Format: a sequence of records `[len u32 LE][crc32 u32 LE][body]`, the CRC over the body;
//! body = `[kind u8][seq u64 LE]` then, for an alert, `[topic_len u16 LE][topic][payload]`.
//! Kinds: 1 alert, 2 done (the alert `seq` was acknowledged; acknowledgements arrive in
//! order, so it also means every earlier one). On open, records are read until the first
//! one that is short or fails its CRC (a torn write at the crash): the file is cut there and
//! the alerts without a later `done` are returned, in order, to be sent again.
//!
//! Durability is chosen per outbox ([`Durability`]): `Fsync` makes every [`Outbox::commit`]
//! an `fdatasync` (the records survive a power cut); `Written` only `write`s them (they
//! survive the process — `kill -9`, a panic, the OOM killer — since the kernel owns the page
//! cache, but not a power cut or kernel crash before writeback). A `done` record is never
//! synced on its own: losing one only makes an alert go out twice, which at-least-once
//! allows.
//!
//! Compaction keeps the file small: when everything is done the file is truncated; when it
//! grows past the limit with alerts still pending, the pending ones are rewritten into a new
//! file that atomically replaces the old (write, sync, rename, sync the directory).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const KIND_ALERT: u8 = 1;
const KIND_DONE: u8 = 2;
const HEADER: usize = 8;
/// Largest body accepted on replay (edgeHub's packet limit and then some).
const MAX_BODY: usize = 1 << 20;
/// The file's name inside the outbox directory.
pub const FILE_NAME: &str = "alerts.outbox";

/// How far a committed record is guaranteed to survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fdatasync` at every commit: survives a power cut.
    Fsync,
    /// `write` only: survives the process dying, not the machine.
    Written,
}

/// An outbox error: the path and what failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("outbox: alert topic of {0} bytes (at most 65535)")]
    TopicTooLong(usize),
    #[error("outbox: done for alert {seq}, but the oldest pending is {oldest:?}")]
    NotPending { seq: u64, oldest: Option<u64> },
    #[error("outbox: alert {flow} was to be appended, but the file's next is {file}")]
    OutOfStep { flow: u64, file: u64 },
    #[error("outbox {path}: another process uses it (one edgefilter per outbox directory)")]
    Locked { path: String },
}

/// An alert recorded in the outbox and not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub seq: u64,
    pub topic: Vec<u8>,
    pub payload: Vec<u8>,
}

/// What opening found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Alerts to send again, oldest first.
    pub pending: Vec<Pending>,
    /// Bytes cut from the end (a torn last write).
    pub truncated_bytes: u64,
}

/// The outbox of one module.
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    file: File,
    durability: Durability,
    /// Alert records appended but not yet written.
    buf: Vec<u8>,
    /// How many alerts `buf` holds (the last ones of `pending`).
    uncommitted: usize,
    /// The file's length after the last write.
    len: u64,
    next_seq: u64,
    pending: VecDeque<Pending>,
    compact_at: u64,
    /// fdatasyncs done (for tests and metrics).
    pub syncs: u64,
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, cutting a torn tail; returns it and the alerts
    /// still pending from before. `compact_at`: file size above which pending alerts are
    /// rewritten into a fresh file.
    pub fn open(
        dir: &Path,
        durability: Durability,
        compact_at: u64,
    ) -> Result<(Outbox, Recovery), OutboxError> {
        let path = dir.join(FILE_NAME);
        let io = |op| {
            let path = path.display().to_string();
            move |source| OutboxError::Io { path, op, source }
        };
        std::fs::create_dir_all(dir).map_err(io("create directory"))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open"))?;
        lock(&file).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => OutboxError::Locked {
                path: path.display().to_string(),
            },
            _ => io("lock")(e),
        })?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("read"))?;
        let (pending, valid, next_seq) = replay(&bytes);
        let truncated_bytes = bytes.len() as u64 - valid;
        if truncated_bytes > 0 {
            file.set_len(valid).map_err(io("truncate the torn tail"))?;
            file.sync_data().map_err(io("sync"))?;
        }
        file.seek(SeekFrom::Start(valid)).map_err(io("seek"))?;
        let recovery = Recovery {
            pending: pending.iter().cloned().collect(),
            truncated_bytes,
        };
        let outbox = Outbox {
            path,
            file,
            durability,
            buf: Vec::with_capacity(64 * 1024),
            uncommitted: 0,
            len: valid,
            next_seq,
            pending,
            compact_at,
            syncs: 0,
        };
        Ok((outbox, recovery))
    }

    fn io(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> OutboxError {
        let path = self.path.display().to_string();
        move |source| OutboxError::Io { path, op, source }
    }

    /// Records an alert (in memory until [`Self::commit`]); returns its sequence number.
    pub fn append(&mut self, topic: &[u8], payload: &[u8]) -> Result<u64, OutboxError> {
        let topic_len =
            u16::try_from(topic.len()).map_err(|_| OutboxError::TopicTooLong(topic.len()))?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let body_len = 1 + 8 + 2 + topic.len() + payload.len();
        let start = self.buf.len();
        self.buf.extend_from_slice(&(body_len as u32).to_le_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.push(KIND_ALERT);
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.extend_from_slice(&topic_len.to_le_bytes());
        self.buf.extend_from_slice(topic);
        self.buf.extend_from_slice(payload);
        let crc = crc32fast::hash(&self.buf[start + HEADER..]);
        self.buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
        self.pending.push_back(Pending {
            seq,
            topic: topic.to_vec(),
            payload: payload.to_vec(),
        });
        self.uncommitted += 1;
        Ok(seq)
    }

    /// Writes what was appended (and syncs it under [`Durability::Fsync`]): from here on the
    /// alerts survive what the durability promises, and their inputs may be acknowledged.
    pub fn commit(&mut self) -> Result<(), OutboxError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buf).map_err(self.io("write"))?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        self.uncommitted = 0;
        if self.durability == Durability::Fsync {
            self.file.sync_data().map_err(self.io("sync"))?;
            self.syncs += 1;
        }
        Ok(())
    }

    /// edgeHub acknowledged alert `seq` (and so, in order, every earlier one). Written, not
    /// synced; compacts when due. Only a committed alert can be done.
    pub fn done(&mut self, seq: u64) -> Result<(), OutboxError> {
        let committed = self.pending.len() - self.uncommitted;
        if !self.pending.iter().take(committed).any(|p| p.seq == seq) {
            return Err(OutboxError::NotPending {
                seq,
                oldest: self.pending.front().map(|p| p.seq),
            });
        }
        while self.pending.front().is_some_and(|p| p.seq <= seq) {
            self.pending.pop_front();
        }
        let mut record = [0u8; HEADER + 9];
        record[..4].copy_from_slice(&9u32.to_le_bytes());
        record[HEADER] = KIND_DONE;
        record[HEADER + 1..].copy_from_slice(&seq.to_le_bytes());
        let crc = crc32fast::hash(&record[HEADER..]);
        record[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all(&record).map_err(self.io("write"))?;
        self.len += record.len() as u64;
        if self.len > self.compact_at {
            self.compact()?;
        }
        Ok(())
    }

    /// The sequence number the next [`Self::append`] returns.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Alerts recorded and not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The file's size.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Empties the file when no committed alert is pending; otherwise rewrites the committed
    /// pending alerts into a new file that replaces it atomically. Alerts appended and not
    /// yet committed stay appended, for the next commit.
    pub fn compact(&mut self) -> Result<(), OutboxError> {
        let committed = self.pending.len() - self.uncommitted;
        if committed == 0 {
            self.file.set_len(0).map_err(self.io("truncate"))?;
            self.file
                .seek(SeekFrom::Start(0))
                .map_err(self.io("seek"))?;
            self.file.sync_data().map_err(self.io("sync"))?;
            self.len = 0;
            return Ok(());
        }
        let tmp = self.path.with_extension("compact");
        let mut fresh = Outbox {
            path: tmp.clone(),
            file: File::create(&tmp).map_err(self.io("create the compacted file"))?,
            durability: Durability::Fsync,
            buf: Vec::new(),
            uncommitted: 0,
            len: 0,
            next_seq: 0,
            pending: VecDeque::new(),
            compact_at: u64::MAX,
            syncs: 0,
        };
        lock(&fresh.file).map_err(self.io("lock the compacted file"))?;
        for p in self.pending.iter().take(committed) {
            fresh.next_seq = p.seq;
            fresh.append(&p.topic, &p.payload)?;
        }
        fresh.commit()?;
        std::fs::rename(&tmp, &self.path).map_err(self.io("rename the compacted file"))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(self.io("sync the directory"))?;
        }
        self.file = fresh.file;
        self.len = fresh.len;
        Ok(())
    }
}

/// An exclusive advisory lock on the outbox file for as long as it is open (released by the
/// kernel when the process dies): two processes on one outbox would replay each other's
/// alerts and cut each other's records. Held by another: `WouldBlock`.
fn lock(file: &File) -> std::io::Result<()> {
    file.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => std::io::ErrorKind::WouldBlock.into(),
        std::fs::TryLockError::Error(e) => e,
    })
}

/// Reads records until the first torn or corrupt one: the pending alerts, the length of the
/// valid prefix, and the next sequence number.
fn replay(bytes: &[u8]) -> (VecDeque<Pending>, u64, u64) {
    let mut pending = VecDeque::new();
    let mut pos = 0usize;
    let mut next_seq = 0u64;
    while bytes.len() - pos >= HEADER {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap_or_default());
        if !(9..=MAX_BODY).contains(&len) || bytes.len() - pos - HEADER < len {
            break;
        }
        let body = &bytes[pos + HEADER..pos + HEADER + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let seq = u64::from_le_bytes(body[1..9].try_into().unwrap_or_default());
        match body[0] {
            KIND_ALERT if len >= 11 => {
                let tl = u16::from_le_bytes([body[9], body[10]]) as usize;
                if 11 + tl > len {
                    break;
                }
                pending.push_back(Pending {
                    seq,
                    topic: body[11..11 + tl].to_vec(),
                    payload: body[11 + tl..].to_vec(),
                });
                next_seq = next_seq.max(seq + 1);
            }
            KIND_DONE => {
                while pending.front().is_some_and(|p: &Pending| p.seq <= seq) {
                    pending.pop_front();
                }
                next_seq = next_seq.max(seq + 1);
            }
            _ => break,
        }
        pos += HEADER + len;
    }
    (pending, pos as u64, next_seq)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
