//! The durable local spool: usage records are appended to segment files by one writer
//! thread that group-commits and acknowledges each record once it is written (and, with
//! [`SpoolSync::EveryCommit`], fsynced); the shipper reads them back from the last
//! shipped position.
//!
//! Directory layout: `seg-<id>.log` segments (frames, see `frame`), `shipped` (the
//! position up to which the sink holds every record, replaced atomically), `LOCK` (an
//! exclusive `flock` so that one process owns the directory), and `undecodable.log`
//! (payloads that passed their checksum but no longer parse, kept for a human).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::FutureExt;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use parking_lot::{Condvar, Mutex};
use tokio::sync::mpsc;

use crate::error::LedgerError;
use crate::frame::{self, Frame};
use crate::record::UsageRecord;

/// Records waiting for the writer. At a few hundred bytes each this bounds the queue to a
/// few MiB; a larger queue rides out longer disk stalls before callers feel backpressure.
pub const SPOOL_QUEUE_CAPACITY: usize = 8192;

/// A segment is closed and a new one begun once it reaches this size. Shipped segments
/// are deleted whole, so this is also the granularity at which disk space comes back.
pub const SEGMENT_TARGET_BYTES: u64 = 8 * 1024 * 1024;

/// Most records written under one fsync. Records that arrive while a sync runs form the
/// next batch; the cap keeps one batch's latency bounded under a flood.
pub const MAX_COMMIT_RECORDS: usize = 1024;

/// When written records reach the disk itself, rather than the OS's page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolSync {
    /// Each group commit is fsynced before its records are acknowledged: an acknowledged
    /// record survives a power loss, and every answer waits for a disk flush.
    EveryCommit,
    /// Records are acknowledged once written to the OS, which keeps them when the process
    /// is killed; a background thread fsyncs at this interval, so a power loss or kernel
    /// crash may lose the records of the last interval.
    Interval(Duration),
}

const SHIPPED_FILE: &str = "shipped";
const LOCK_FILE: &str = "LOCK";
const UNDECODABLE_FILE: &str = "undecodable.log";

/// A place in the spool: a segment id and a byte offset in it, always at a frame boundary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
}

/// How the shipper is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// After the call in flight.
    Now,
    /// Once everything is shipped, or at the deadline.
    Drain(Instant),
}

/// What the writer, the shipper and the ledger's callers share, under one lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Every segment not yet deleted, with its durable length.
    pub(crate) segments: BTreeMap<u64, u64>,
    /// Everything before this position is in the sink.
    pub(crate) shipped: Position,
    pub(crate) stop: Option<Stop>,
    pub(crate) committed_records: u64,
    pub(crate) shipped_records: u64,
    /// Callers of `Ledger::sync` waiting: the shipper ships at once rather than lingering.
    pub(crate) sync_waiters: usize,
    pub(crate) sink_failures: u64,
    pub(crate) last_sink_error: Option<String>,
}

impl State {
    /// The end of what is durable now.
    pub(crate) fn durable_end(&self) -> Position {
        self.segments
            .iter()
            .next_back()
            .map(|(&segment, &offset)| Position { segment, offset })
            .unwrap_or(self.shipped)
    }

    /// Durable bytes between the shipped position and `upto`.
    pub(crate) fn unshipped_bytes(&self, upto: Position) -> u64 {
        if upto.segment < self.shipped.segment {
            return 0;
        }
        self.segments
            .range(self.shipped.segment..=upto.segment)
            .map(|(&id, &len)| {
                let end = if id == upto.segment {
                    len.min(upto.offset)
                } else {
                    len
                };
                let start = if id == self.shipped.segment {
                    self.shipped.offset
                } else {
                    0
                };
                end.saturating_sub(start)
            })
            .sum()
    }

    pub(crate) fn has_unshipped(&self) -> bool {
        self.unshipped_bytes(self.durable_end()) > 0
    }
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Notified on every commit, shipment and stop.
    pub(crate) changed: Condvar,
    /// Notified only when the shipper must stop lingering (a stop or a sync), so that a
    /// lingering shipper is not woken by every commit.
    pub(crate) urge: Condvar,
    pub(crate) queue_full: AtomicU64,
}

type Ack = oneshot::Sender<Result<(), LedgerError>>;

enum Job {
    Append {
        frame: Vec<u8>,
        ack: Ack,
    },
    /// Acknowledged once every record queued before it is committed.
    Barrier(Ack),
    Close,
}

/// Resolves once the record is on disk (or the write failed). Await it, or `wait()` for
/// it from a thread that may block; dropping it does not cancel the write.
#[derive(Debug)]
#[must_use = "dropping it is fine, but then nobody learns whether the record is durable"]
pub struct Durable {
    rx: oneshot::Receiver<Result<(), LedgerError>>,
}

impl Durable {
    pub fn wait(self) -> Result<(), LedgerError> {
        futures::executor::block_on(self)
    }
}

impl Future for Durable {
    type Output = Result<(), LedgerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.rx.poll_unpin(cx).map(|acked| match acked {
            Ok(result) => result,
            // The writer dropped the job unwritten: the spool closed first.
            Err(oneshot::Canceled) => Err(LedgerError::Closed),
        })
    }
}

// === impl Spool ===

pub(crate) struct Spool {
    dir: PathBuf,
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    lock: Arc<Flock<File>>,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`: cuts a torn tail left by a crash, drops
    /// segments already shipped, and starts a fresh segment and the writer thread.
    pub(crate) fn open(
        dir: &Path,
        segment_bytes: u64,
        queue_capacity: usize,
        sync: SpoolSync,
    ) -> Result<Self, LedgerError> {
        fs::create_dir_all(dir).map_err(LedgerError::io("creating spool directory", dir))?;
        let lock = lock_dir(dir)?;
        let (mut segments, shipped) = recover(dir)?;
        let active_id = segments
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(shipped.segment)
            + 1;
        let file = create_segment(dir, active_id)?;
        segments.insert(active_id, 0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                segments,
                shipped,
                ..State::default()
            }),
            ..Shared::default()
        });
        let (tx, rx) = mpsc::channel(queue_capacity.max(1));
        let file = Arc::new(file);
        let background = match sync {
            SpoolSync::EveryCommit => None,
            SpoolSync::Interval(every) => Some(BackgroundSync::start(dir, &file, every)?),
        };
        let writer = Writer {
            dir: dir.to_path_buf(),
            shared: Arc::clone(&shared),
            active: Some(Active {
                id: active_id,
                file,
                len: 0,
            }),
            next_id: active_id + 1,
            segment_bytes,
            background,
        };
        let handle = thread::Builder::new()
            .name("tollgate-spool".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(LedgerError::io("starting the spool writer for", dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tx,
            shared,
            writer: Mutex::new(Some(handle)),
            lock: Arc::new(lock),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn reader(&self) -> SpoolReader {
        SpoolReader {
            dir: self.dir.clone(),
            shared: Arc::clone(&self.shared),
            open: None,
            persisted: None,
            _lock: Arc::clone(&self.lock),
        }
    }

    /// Queues the record without waiting; a full queue hands it back.
    pub(crate) fn try_append(&self, record: UsageRecord) -> Result<Durable, LedgerError> {
        let frame = frame::encode(&record)?;
        let (ack, rx) = oneshot::channel();
        match self.tx.try_send(Job::Append { frame, ack }) {
            Ok(()) => Ok(Durable { rx }),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.queue_full.fetch_add(1, Ordering::Relaxed);
                Err(LedgerError::QueueFull(Box::new(record)))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(LedgerError::Closed),
        }
    }

    /// Queues the record, waiting for room while the queue is full.
    pub(crate) async fn append(&self, record: UsageRecord) -> Result<Durable, LedgerError> {
        let frame = frame::encode(&record)?;
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Job::Append { frame, ack })
            .await
            .map_err(|_| LedgerError::Closed)?;
        Ok(Durable { rx })
    }

    /// Waits until every record queued before this call is committed (or failed).
    pub(crate) fn flush(&self) -> Result<(), LedgerError> {
        let (ack, rx) = oneshot::channel();
        futures::executor::block_on(self.tx.send(Job::Barrier(ack)))
            .map_err(|_| LedgerError::Closed)?;
        Durable { rx }.wait()
    }

    /// Commits everything queued before this call, then stops the writer.
    pub(crate) fn close(&self) {
        // Through the queue, so that every record sent before it is committed first. An
        // error means the writer is already gone.
        let _ = futures::executor::block_on(self.tx.send(Job::Close));
        if let Some(handle) = self.writer.lock().take() {
            if handle.join().is_err() {
                tracing::error!("spool writer thread panicked");
            }
        }
    }
}

fn lock_dir(dir: &Path) -> Result<Flock<File>, LedgerError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(LedgerError::io("opening", &path))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == Errno::EWOULDBLOCK {
            LedgerError::Locked(dir.to_path_buf())
        } else {
            LedgerError::Io {
                context: "locking",
                path,
                source: errno.into(),
            }
        }
    })
}

// === recovery ===

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("seg-{id:020}.log"))
}

fn segment_id(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, LedgerError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(LedgerError::io("listing", dir))? {
        let entry = entry.map_err(LedgerError::io("listing", dir))?;
        if let Some(id) = entry.file_name().to_str().and_then(segment_id) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn read_shipped(dir: &Path) -> Result<Position, LedgerError> {
    let path = dir.join(SHIPPED_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Position::default()),
        Err(err) => return Err(LedgerError::io("reading", &path)(err)),
    };
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(segment)), Some(Ok(offset))) => Ok(Position { segment, offset }),
        _ => {
            // Written by rename, so this is outside damage. Shipping everything again is
            // safe: the sinks skip record ids they hold.
            tracing::warn!(path = %path.display(), "unreadable shipped marker; replaying the spool");
            Ok(Position::default())
        }
    }
}

/// Replaces the shipped marker. Only a marker that allows deleting segments must reach
/// the disk (`durable`): one lost to a power cut otherwise only means records are shipped
/// again, which the sinks skip.
fn write_shipped(dir: &Path, shipped: Position, durable: bool) -> Result<(), LedgerError> {
    let tmp = dir.join("shipped.tmp");
    let path = dir.join(SHIPPED_FILE);
    let mut file = File::create(&tmp).map_err(LedgerError::io("creating", &tmp))?;
    file.write_all(format!("{} {}\n", shipped.segment, shipped.offset).as_bytes())
        .and_then(|()| if durable { file.sync_data() } else { Ok(()) })
        .map_err(LedgerError::io("writing", &tmp))?;
    fs::rename(&tmp, &path).map_err(LedgerError::io("renaming", &tmp))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LedgerError::io("syncing directory", dir))
}

fn create_segment(dir: &Path, id: u64) -> Result<File, LedgerError> {
    let path = segment_path(dir, id);
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(LedgerError::io("creating segment", &path))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Scans a segment and cuts it after its last whole frame; returns the length kept.
fn repair_segment(path: &Path) -> Result<u64, LedgerError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(LedgerError::io("opening segment", path))?;
    let size = file
        .metadata()
        .map_err(LedgerError::io("reading segment", path))?
        .len();
    let mut reader = BufReader::new(&file);
    let mut valid = 0u64;
    loop {
        match frame::read(&mut reader).map_err(LedgerError::io("reading segment", path))? {
            Frame::Whole { len, .. } => valid += len,
            Frame::End => break,
            Frame::Broken => {
                tracing::warn!(
                    path = %path.display(),
                    kept = valid,
                    dropped = size - valid,
                    "cutting a torn tail from a spool segment"
                );
                file.set_len(valid)
                    .and_then(|()| file.sync_all())
                    .map_err(LedgerError::io("truncating segment", path))?;
                break;
            }
        }
    }
    Ok(valid)
}

/// Returns the segments left to ship with their lengths, and the shipped position.
fn recover(dir: &Path) -> Result<(BTreeMap<u64, u64>, Position), LedgerError> {
    let mut shipped = read_shipped(dir)?;
    let mut segments = BTreeMap::new();
    for id in list_segments(dir)? {
        let path = segment_path(dir, id);
        let len = if id < shipped.segment {
            0
        } else {
            repair_segment(&path)?
        };
        if len == 0 {
            fs::remove_file(&path).map_err(LedgerError::io("removing", &path))?;
        } else {
            segments.insert(id, len);
        }
    }
    match segments.get(&shipped.segment) {
        Some(&len) => shipped.offset = shipped.offset.min(len),
        None => {
            shipped = Position {
                segment: segments.keys().next().copied().unwrap_or(shipped.segment),
                offset: 0,
            }
        }
    }
    Ok((segments, shipped))
}

// === impl Writer ===

struct Active {
    id: u64,
    /// Shared with the background syncer, if any.
    file: Arc<File>,
    len: u64,
}

/// The segment the background syncer flushes, and whether it has writes to flush.
struct SyncTarget {
    file: Mutex<Option<Arc<File>>>,
    dirty: AtomicBool,
}

impl SyncTarget {
    fn sync(&self) {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let file = self.file.lock().clone();
        if let Some(file) = file {
            if let Err(err) = file.sync_data() {
                self.dirty.store(true, Ordering::Release);
                tracing::error!(error = %err, "spool fsync failed");
            }
        }
    }
}

/// The thread that fsyncs the active segment at an interval ([`SpoolSync::Interval`]).
struct BackgroundSync {
    target: Arc<SyncTarget>,
    /// Dropping it stops the thread.
    stop: Option<std_mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl BackgroundSync {
    fn start(dir: &Path, file: &Arc<File>, every: Duration) -> Result<Self, LedgerError> {
        let target = Arc::new(SyncTarget {
            file: Mutex::new(Some(Arc::clone(file))),
            dirty: AtomicBool::new(false),
        });
        let (stop, stopped) = std_mpsc::channel::<()>();
        let syncing = Arc::clone(&target);
        let handle = thread::Builder::new()
            .name("tollgate-spool-sync".to_owned())
            .spawn(move || {
                while let Err(std_mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    syncing.sync();
                }
            })
            .map_err(LedgerError::io("starting the spool syncer for", dir))?;
        Ok(Self {
            target,
            stop: Some(stop),
            handle: Some(handle),
        })
    }

    /// Stops the thread, then flushes what it had not.
    fn finish(&mut self) {
        self.stop = None;
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::error!("spool syncer thread panicked");
            }
        }
        self.target.sync();
    }
}

struct Writer {
    dir: PathBuf,
    shared: Arc<Shared>,
    /// `None` after a failed write until the next batch opens a fresh segment.
    active: Option<Active>,
    next_id: u64,
    segment_bytes: u64,
    /// `None` when every commit is fsynced.
    background: Option<BackgroundSync>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut batch: Vec<(Vec<u8>, Ack)> = Vec::new();
        let mut barriers: Vec<Ack> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut closing = false;
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Append { frame, ack } => batch.push((frame, ack)),
                    Job::Barrier(ack) => barriers.push(ack),
                    Job::Close => {
                        closing = true;
                        break;
                    }
                }
                if batch.len() < MAX_COMMIT_RECORDS {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                let result = self.write(&batch);
                for (_, ack) in batch.drain(..) {
                    let _ = ack.send(result.clone().map_err(LedgerError::WriteFailed));
                }
            }
            // Everything queued before a barrier was in this batch or an earlier one.
            for ack in barriers.drain(..) {
                let _ = ack.send(Ok(()));
            }
            if closing {
                break;
            }
        }
        if let Some(background) = self.background.as_mut() {
            background.finish();
        }
        // Jobs still queued are dropped with the receiver; their `Durable`s report Closed.
    }

    fn write(&mut self, batch: &[(Vec<u8>, Ack)]) -> Result<(), String> {
        if self.active.is_none() {
            self.start_segment().map_err(|err| err.to_string())?;
        }
        let Some(active) = self.active.as_mut() else {
            return Err("no spool segment".to_owned());
        };
        let mut bytes = Vec::with_capacity(batch.iter().map(|(frame, _)| frame.len()).sum());
        for (frame, _) in batch {
            bytes.extend_from_slice(frame);
        }
        let every_commit = self.background.is_none();
        if let Err(err) = (&*active.file).write_all(&bytes).and_then(|()| {
            if every_commit {
                active.file.sync_data()
            } else {
                Ok(())
            }
        }) {
            // Cut back to the durable length and go on in a fresh file: after a failed
            // fsync the kernel may drop the dirty pages, and a later fsync of the same
            // file could report success without them.
            let _ = active.file.set_len(active.len);
            self.active = None;
            tracing::error!(error = %err, "spool write failed");
            return Err(err.to_string());
        }
        active.len += bytes.len() as u64;
        if let Some(background) = &self.background {
            background.target.dirty.store(true, Ordering::Release);
        }
        let (id, len) = (active.id, active.len);
        {
            let mut state = self.shared.state.lock();
            state.segments.insert(id, len);
            state.committed_records += batch.len() as u64;
        }
        self.shared.changed.notify_all();
        if len >= self.segment_bytes {
            if let Err(err) = self.start_segment() {
                // The next batch tries again; until then nothing is written.
                self.active = None;
                tracing::error!(error = %err, "cannot start a new spool segment");
            }
        }
        Ok(())
    }

    fn start_segment(&mut self) -> Result<(), LedgerError> {
        let id = self.next_id;
        let file = Arc::new(create_segment(&self.dir, id)?);
        self.next_id += 1;
        if let Some(background) = &self.background {
            // Only the active segment is synced in the background, so the one it replaces
            // is flushed now.
            background.target.sync();
            *background.target.file.lock() = Some(Arc::clone(&file));
        }
        self.shared.state.lock().segments.insert(id, 0);
        self.active = Some(Active { id, file, len: 0 });
        Ok(())
    }
}

// === impl SpoolReader ===

/// Records read back for shipping, and the position just after the last one.
pub(crate) struct Batch {
    pub(crate) records: Vec<UsageRecord>,
    pub(crate) end: Position,
}

/// Reads durable records from the shipped position on; owned by the shipper thread.
pub(crate) struct SpoolReader {
    dir: PathBuf,
    shared: Arc<Shared>,
    open: Option<(u64, BufReader<File>)>,
    persisted: Option<Position>,
    /// The directory stays locked until the shipper, too, is done with it.
    _lock: Arc<Flock<File>>,
}

impl SpoolReader {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Up to `max_records` records after the shipped position.
    pub(crate) fn next_batch(&mut self, max_records: usize) -> Result<Batch, LedgerError> {
        let (segments, mut pos) = {
            let state = self.shared.state.lock();
            (state.segments.clone(), state.shipped)
        };
        let mut records = Vec::new();
        let mut positioned = false;
        while records.len() < max_records {
            let durable = segments.get(&pos.segment).copied().unwrap_or(0);
            if pos.offset >= durable {
                match segments.range(pos.segment + 1..).next() {
                    Some((&next, _)) => {
                        pos = Position {
                            segment: next,
                            offset: 0,
                        };
                        positioned = false;
                        continue;
                    }
                    None => break,
                }
            }
            if !positioned {
                self.seek(pos)?;
                positioned = true;
            }
            let Some((_, reader)) = self.open.as_mut() else {
                break;
            };
            let path = segment_path(&self.dir, pos.segment);
            match frame::read(reader).map_err(LedgerError::io("reading segment", &path))? {
                Frame::Whole { payload, len } if pos.offset + len <= durable => {
                    pos.offset += len;
                    match serde_json::from_slice::<UsageRecord>(&payload) {
                        Ok(mut record) => {
                            record.backfill_record_id();
                            records.push(record);
                        }
                        Err(err) => self.set_aside(&payload, &err),
                    }
                }
                _ => {
                    // Every frame below the durable length was whole when written and
                    // at recovery, so this is damage to the disk. Skip the rest of the
                    // segment rather than stall the ledger forever.
                    tracing::error!(
                        path = %path.display(),
                        offset = pos.offset,
                        lost_bytes = durable - pos.offset,
                        "damaged spool segment; skipping its remainder"
                    );
                    pos.offset = durable;
                }
            }
        }
        Ok(Batch { records, end: pos })
    }

    fn seek(&mut self, pos: Position) -> Result<(), LedgerError> {
        let path = segment_path(&self.dir, pos.segment);
        let reader = match self.open.take() {
            Some((id, reader)) if id == pos.segment => reader,
            _ => BufReader::new(
                File::open(&path).map_err(LedgerError::io("opening segment", &path))?,
            ),
        };
        let reader = self.open.insert((pos.segment, reader));
        reader
            .1
            .seek(SeekFrom::Start(pos.offset))
            .map_err(LedgerError::io("seeking in segment", &path))?;
        Ok(())
    }

    fn set_aside(&self, payload: &[u8], err: &serde_json::Error) {
        let path = self.dir.join(UNDECODABLE_FILE);
        tracing::error!(error = %err, path = %path.display(), "spooled record does not parse; set aside");
        let appended = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| {
                file.write_all(payload)?;
                file.write_all(b"\n")?;
                file.sync_data()
            });
        if let Err(err) = appended {
            tracing::error!(error = %err, path = %path.display(), "cannot set aside a spooled record");
        }
    }

    /// Records that everything before `end` is in the sink, and deletes the segments
    /// that are now wholly shipped.
    pub(crate) fn mark_shipped(&mut self, end: Position, records: usize) {
        let frees_segments = self
            .shared
            .state
            .lock()
            .segments
            .range(..end.segment)
            .next()
            .is_some();
        let persisted = if self.persisted == Some(end) {
            true
        } else {
            match write_shipped(&self.dir, end, frees_segments) {
                Ok(()) => {
                    self.persisted = Some(end);
                    true
                }
                Err(err) => {
                    // The records are in the sink; after a restart they are sent again
                    // and skipped there. Keep the segments until a marker is written.
                    tracing::error!(error = %err, "cannot persist the shipped position");
                    false
                }
            }
        };
        let doomed: Vec<u64> = {
            let mut state = self.shared.state.lock();
            state.shipped = end;
            state.shipped_records += records as u64;
            if persisted && frees_segments {
                let doomed: Vec<u64> = state
                    .segments
                    .range(..end.segment)
                    .map(|(&id, _)| id)
                    .collect();
                for id in &doomed {
                    state.segments.remove(id);
                }
                doomed
            } else {
                Vec::new()
            }
        };
        self.shared.changed.notify_all();
        for id in doomed {
            let path = segment_path(&self.dir, id);
            if self.open.as_ref().is_some_and(|(open, _)| *open == id) {
                self.open = None;
            }
            if let Err(err) = fs::remove_file(&path) {
                tracing::warn!(error = %err, path = %path.display(), "cannot delete a shipped segment");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::record;

    fn open(dir: &Path) -> Spool {
        Spool::open(dir, SEGMENT_TARGET_BYTES, 64, SpoolSync::EveryCommit).unwrap()
    }

    fn read_all(spool: &Spool) -> Vec<String> {
        let mut reader = spool.reader();
        let batch = reader.next_batch(usize::MAX).unwrap();
        batch.records.into_iter().map(|r| r.request_id).collect()
    }

    fn segment_files(dir: &Path) -> Vec<u64> {
        list_segments(dir).unwrap()
    }

    #[test]
    fn appends_are_acknowledged_and_replayed_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path());
        let acks: Vec<Durable> = (0..10)
            .map(|i| spool.try_append(record(&format!("r{i}"), i)).unwrap())
            .collect();
        for ack in acks {
            ack.wait().unwrap();
        }
        assert_eq!(spool.shared().state.lock().committed_records, 10);
        spool.close();
        drop(spool);

        let spool = open(dir.path());
        let ids = read_all(&spool);
        assert_eq!(ids, (0..10).map(|i| format!("r{i}")).collect::<Vec<_>>());
    }

    #[test]
    fn background_sync_acknowledges_on_write_across_segments_and_replays() {
        let dir = tempfile::tempdir().unwrap();
        // One record per segment, so every commit also hands the syncer a new file.
        let sync = SpoolSync::Interval(Duration::from_millis(5));
        let spool = Spool::open(dir.path(), 1, 64, sync).unwrap();
        for i in 0..20 {
            spool
                .try_append(record(&format!("r{i}"), i))
                .unwrap()
                .wait()
                .unwrap();
        }
        let expected: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
        assert_eq!(
            read_all(&spool),
            expected,
            "written records are readable at once"
        );
        spool.close();
        drop(spool);

        let spool = Spool::open(dir.path(), 1, 64, sync).unwrap();
        assert_eq!(read_all(&spool), expected);
    }

    #[test]
    fn torn_tail_is_cut_and_later_appends_survive() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path());
        for i in 0..3 {
            spool
                .try_append(record(&format!("r{i}"), i))
                .unwrap()
                .wait()
                .unwrap();
        }
        spool.close();
        drop(spool);
        // A crash mid-write: half a frame, then zeros as some filesystems leave.
        let last = *segment_files(dir.path()).last().unwrap();
        let path = segment_path(dir.path(), last);
        let whole = fs::metadata(&path).unwrap().len();
        let half = frame::encode(&record("torn", 9)).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&half[..half.len() / 2]).unwrap();
        file.write_all(&[0; 100]).unwrap();
        drop(file);

        let spool = open(dir.path());
        assert_eq!(fs::metadata(&path).unwrap().len(), whole);
        spool.try_append(record("r3", 3)).unwrap().wait().unwrap();
        assert_eq!(read_all(&spool), ["r0", "r1", "r2", "r3"]);
    }

    #[test]
    fn shipped_position_survives_reopen_and_deletes_segments() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1, 64, SpoolSync::EveryCommit).unwrap();
        for i in 0..4 {
            spool
                .try_append(record(&format!("r{i}"), i))
                .unwrap()
                .wait()
                .unwrap();
        }
        // One record per segment at this size, plus the fresh active one.
        assert_eq!(segment_files(dir.path()).len(), 5);
        let mut reader = spool.reader();
        let batch = reader.next_batch(3).unwrap();
        assert_eq!(batch.records.len(), 3);
        reader.mark_shipped(batch.end, 3);
        assert_eq!(segment_files(dir.path()).len(), 3);
        spool.close();
        drop(reader);
        drop(spool);

        let spool = open(dir.path());
        assert_eq!(read_all(&spool), ["r3"]);
    }

    #[test]
    fn a_second_process_cannot_open_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _spool = open(dir.path());
        assert!(matches!(
            Spool::open(dir.path(), SEGMENT_TARGET_BYTES, 8, SpoolSync::EveryCommit),
            Err(LedgerError::Locked(_))
        ));
    }

    #[test]
    fn full_queue_hands_the_record_back() {
        let dir = tempfile::tempdir().unwrap();
        let spool =
            Spool::open(dir.path(), SEGMENT_TARGET_BYTES, 1, SpoolSync::EveryCommit).unwrap();
        let mut handed_back = 0;
        let mut acks = Vec::new();
        for i in 0..2000 {
            match spool.try_append(record(&format!("r{i}"), i)) {
                Ok(ack) => acks.push(ack),
                Err(LedgerError::QueueFull(rec)) => {
                    assert_eq!(rec.request_id, format!("r{i}"));
                    handed_back += 1;
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert!(handed_back > 0);
        assert_eq!(
            spool.shared().queue_full.load(Ordering::Relaxed),
            handed_back
        );
        for ack in acks {
            ack.wait().unwrap();
        }
    }

    #[test]
    fn close_commits_what_was_queued_and_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path());
        let acks: Vec<Durable> = (0..50)
            .map(|i| spool.try_append(record(&format!("r{i}"), i)).unwrap())
            .collect();
        spool.close();
        for ack in acks {
            ack.wait().unwrap();
        }
        assert!(matches!(
            spool.try_append(record("late", 0)),
            Err(LedgerError::Closed)
        ));
    }

    #[test]
    fn undecodable_records_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path());
        spool.try_append(record("r0", 0)).unwrap().wait().unwrap();
        spool.close();
        drop(spool);
        // A checksummed frame whose JSON is not a record (as from an incompatible build).
        let last = *segment_files(dir.path()).last().unwrap();
        let payload = br#"{"not":"a record"}"#;
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        let path = segment_path(dir.path(), last);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&frame)
            .unwrap();

        let spool = open(dir.path());
        spool.try_append(record("r1", 1)).unwrap().wait().unwrap();
        assert_eq!(read_all(&spool), ["r0", "r1"]);
        let aside = fs::read(dir.path().join(UNDECODABLE_FILE)).unwrap();
        assert_eq!(aside, [&payload[..], b"\n"].concat());
    }
}
