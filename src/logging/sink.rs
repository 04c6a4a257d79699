//! The bounded, non-blocking way to stdout. Request threads copy a formatted line into a
//! queue of at most [`QUEUE_BYTES`] and go on; one writer thread hands everything queued to
//! stdout in one `write` call. When stdout stalls (a pipe nobody reads, a slow log shipper)
//! the queue fills and further lines are dropped whole and counted, so traffic never waits
//! for the log.

use prometheus::IntCounter;
use std::io::Write;
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Bytes of lines that may wait for stdout (about 3,000 access lines): enough to ride out a
/// log shipper's hiccup, small enough to stay a bounded cost.
pub const QUEUE_BYTES: usize = 1 << 20;

/// What a line is, for the drop counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An access-log line (target `access`).
    Access,
    /// Any other log event.
    Event,
}

fn drop_counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("a valid metric name")
}

/// `jwtgate_access_log_dropped_total`: access-log lines dropped because the queue was full.
/// Process-wide (stdout, and so the queue, belongs to the process, not to one
/// [`crate::metrics::Metrics`]): every registry registers a clone, and clones share the count.
pub static ACCESS_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    drop_counter(
        "jwtgate_access_log_dropped_total",
        "Access-log lines dropped because stdout did not keep up (the log queue was full).",
    )
});
/// `jwtgate_log_events_dropped_total`: other log lines dropped because the queue was full.
pub static EVENTS_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    drop_counter(
        "jwtgate_log_events_dropped_total",
        "Other log lines dropped because stdout did not keep up (the log queue was full).",
    )
});

struct Queue {
    /// Whole lines waiting for the writer.
    pending: Vec<u8>,
    /// The writer waits on `wake`: a push must notify it (and only then, since a notify is a
    /// system call).
    writer_idle: bool,
    /// The writer holds a batch it has not finished writing.
    writing: bool,
}

struct Sink {
    queue: Mutex<Queue>,
    /// Lines arrived for an idle writer.
    wake: Condvar,
    /// The writer finished a batch and found nothing more (for [`flush`]).
    drained: Condvar,
}

impl Sink {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock cannot leave the queue half-updated (pushes are one
        // `extend_from_slice`): keep logging.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Set once the writer thread runs; until then (or if it could not start) lines are written
/// by the threads that log them.
static SINK: OnceLock<&'static Sink> = OnceLock::new();

/// Starts the writer thread (once; later calls do nothing).
pub fn start() -> std::io::Result<()> {
    if SINK.get().is_some() {
        return Ok(());
    }
    // Lives as long as the process, like the thread that drains it.
    let sink: &'static Sink = Box::leak(Box::new(Sink {
        queue: Mutex::new(Queue {
            pending: Vec::new(),
            writer_idle: false,
            writing: false,
        }),
        wake: Condvar::new(),
        drained: Condvar::new(),
    }));
    std::thread::Builder::new()
        .name("jwtgate-log".into())
        .spawn(move || write_loop(sink))?;
    let _ = SINK.set(sink);
    Ok(())
}

/// Queues one whole line (ending in `\n`); drops and counts it when the queue is full.
pub fn push(line: &[u8], kind: Kind) {
    let Some(sink) = SINK.get() else {
        // No writer thread (logging not initialised): the caller's thread writes, as before.
        let _ = std::io::stdout().lock().write_all(line);
        return;
    };
    let mut q = sink.lock();
    if q.pending.len() + line.len() > QUEUE_BYTES {
        drop(q);
        match kind {
            Kind::Access => ACCESS_DROPPED.inc(),
            Kind::Event => EVENTS_DROPPED.inc(),
        }
        return;
    }
    q.pending.extend_from_slice(line);
    if q.writer_idle {
        q.writer_idle = false;
        drop(q);
        sink.wake.notify_one();
    }
}

/// Waits (at most `limit`) until every line queued so far is written to stdout.
/// Returns false when stdout did not take them in time.
pub fn flush(limit: Duration) -> bool {
    let Some(sink) = SINK.get() else {
        return std::io::stdout().flush().is_ok();
    };
    let deadline = Instant::now() + limit;
    let mut q = sink.lock();
    while !q.pending.is_empty() || q.writing {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        q = sink
            .drained
            .wait_timeout(q, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    true
}

fn write_loop(sink: &Sink) {
    // Two buffers swapped back and forth: after warm-up nothing is allocated.
    let mut batch = Vec::new();
    let stdout = std::io::stdout();
    loop {
        {
            let mut q = sink.lock();
            q.writing = false;
            while q.pending.is_empty() {
                sink.drained.notify_all();
                q.writer_idle = true;
                q = sink.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
            q.writer_idle = false;
            std::mem::swap(&mut q.pending, &mut batch);
            q.writing = true;
        }
        // A failed write (stdout closed) loses this batch; the gateway goes on serving.
        let mut out = stdout.lock();
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        drop(out);
        batch.clear();
    }
}
