//! Log output: one JSON object per line (`time`, `level`, `target`, `message`, then the
//! event's fields), or plain text for people. Access-log lines have target `access`; in JSON
//! they are written by [`access`] directly, the same shape as every other line.
//!
//! Every line, access or not, reaches stdout through [`sink`]: a bounded queue and one writer
//! thread, so a stalled stdout drops (and counts) lines instead of stalling traffic.

pub mod sink;

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Serialize, Serializer};
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use sink::Kind;

/// How long shutdown waits for queued lines to reach stdout before the process exits anyway
/// (a stdout nobody reads must not hold the exit forever).
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Formats events as JSON lines whose first member is `time` (RFC 3339, UTC).
pub struct JsonLines;

/// The members every line starts with, then the line's own (flattened in).
#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    time: Now,
    level: &'static str,
    target: &'a str,
    #[serde(flatten)]
    fields: &'a T,
}

fn level_str(level: tracing::Level) -> &'static str {
    match level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warn",
        tracing::Level::INFO => "info",
        tracing::Level::DEBUG => "debug",
        tracing::Level::TRACE => "trace",
    }
}

/// The current time as RFC 3339 UTC with microseconds (`2026-12-06T05:07:26.123456Z`).
struct Now;

impl Serialize for Now {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = now_rfc3339();
        s.serialize_str(std::str::from_utf8(&text).unwrap_or("1970-01-01T00:00:00.000000Z"))
    }
}

/// The current time, formatted. The date and time up to the second are formatted once per
/// second per thread; only the microseconds are per line.
fn now_rfc3339() -> [u8; 27] {
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
    }
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let mut out = *b"1970-01-01T00:00:00.000000Z";
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let formatted = humantime::format_rfc3339_seconds(t).to_string();
            // `YYYY-MM-DDTHH:MM:SSZ`; a year past 9999 does not fit and keeps the epoch.
            if let Some(b) = formatted.as_bytes().get(..19) {
                text.copy_from_slice(b);
            }
            *cached = secs;
        }
        out[..19].copy_from_slice(&text[..]);
    });
    let mut m = since.subsec_micros();
    for d in out[20..26].iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    out
}

/// Milliseconds rounded to three decimals (to the microsecond: plenty for a log line), printed
/// without a fraction when whole (`12`, `0.5`); `null` when not finite.
fn ms<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    let thousandths = (value * 1000.0).round();
    if !thousandths.is_finite() {
        s.serialize_none()
    } else if thousandths % 1000.0 == 0.0 && thousandths.abs() < 9e15 {
        s.serialize_i64((thousandths / 1000.0) as i64)
    } else {
        s.serialize_f64(thousandths / 1000.0)
    }
}

fn opt_ms<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => ms(v, s),
        None => s.serialize_none(),
    }
}

/// Lets serde_json write into a `fmt::Write` (tracing's line buffer). serde_json hands over
/// whole UTF-8 runs (it splits strings only before an ASCII byte it escapes).
struct FmtIo<'a, 'w>(&'a mut Writer<'w>);

impl std::io::Write for FmtIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let s = std::str::from_utf8(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.0.write_str(s).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `value` as JSON into `w`.
fn json(w: &mut Writer<'_>, value: &impl Serialize) -> fmt::Result {
    serde_json::to_writer(FmtIo(w), value).map_err(|_| fmt::Error)
}

/// A field's value shown with `Debug` or `Display`, as a JSON string, escaped as it is
/// formatted (no intermediate `String`).
struct Shown<'a>(fmt::Arguments<'a>);

impl Serialize for Shown<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

struct Ms(f64);

impl Serialize for Ms {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ms(&self.0, s)
    }
}

struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn put(&mut self, field: &Field, value: &impl Serialize) {
        if self.result.is_ok() {
            self.result = self
                .w
                .write_char(',')
                .and_then(|()| json(self.w, &field.name()))
                .and_then(|()| self.w.write_char(':'))
                .and_then(|()| json(self.w, value));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, &value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, &value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, &value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, &Ms(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, &value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, &Shown(format_args!("{value:?}")));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, &Shown(format_args!("{value}")));
    }
}

/// Writes the members every line starts with: `{"time":…,"level":…,"target":…`.
fn write_line_start(w: &mut Writer<'_>, level: tracing::Level, target: &str) -> fmt::Result {
    w.write_str("{\"time\":")?;
    json(w, &Now)?;
    w.write_str(",\"level\":")?;
    json(w, &level_str(level))?;
    w.write_str(",\"target\":")?;
    json(w, &target)
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write_line_start(&mut writer, *meta.level(), meta.target())?;
        let mut fields = Fields {
            w: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str("}\n")
    }
}

/// Hands each formatted event to the [`sink`] queue. `tracing_subscriber` formats an event
/// whole and writes it in one `write_all`, so each write is one whole line.
#[derive(Clone, Copy)]
struct QueueWriter(Kind);

impl std::io::Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sink::push(buf, self.0);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct MakeQueueWriter;

impl<'a> MakeWriter<'a> for MakeQueueWriter {
    type Writer = QueueWriter;
    fn make_writer(&'a self) -> QueueWriter {
        QueueWriter(Kind::Event)
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> QueueWriter {
        // The text format's access lines are ordinary events: count them as access lines.
        QueueWriter(if meta.target() == "access" {
            Kind::Access
        } else {
            Kind::Event
        })
    }
}

/// Installs the global subscriber: `format` is `json` or `text`; the level comes from
/// `JWTGATE_LOG` (an `EnvFilter` directive such as `info` or `jwtgate=debug,access=off`),
/// else `level`. Starts the writer thread every line goes through.
pub fn init(format: &str, level: &str) {
    if let Err(e) = sink::start() {
        // Without the thread, lines are written by the threads that log, as before.
        eprintln!("jwtgate: starting the log writer thread: {e}");
    }
    let filter = EnvFilter::try_from_env("JWTGATE_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(MakeQueueWriter);
    let json = format != "text";
    let result = if json {
        builder.event_format(JsonLines).try_init()
    } else {
        builder.try_init()
    };
    match result {
        Ok(()) => JSON_ACCESS.store(json, Ordering::Relaxed),
        Err(e) => eprintln!("jwtgate: logging already initialised: {e}"),
    }
}

/// Waits (at most [`FLUSH_TIMEOUT`]) until every line logged so far reached stdout: the last
/// thing before the process exits.
pub fn flush() {
    if !sink::flush(FLUSH_TIMEOUT) {
        eprintln!(
            "jwtgate: stdout did not take the last log lines within {FLUSH_TIMEOUT:?}; exiting without them"
        );
    }
}

/// True once [`init`] installed the JSON format: [`access`] then writes its lines itself.
static JSON_ACCESS: AtomicBool = AtomicBool::new(false);

/// One access-log line (target `access`). Absent options are left out of the line.
#[derive(Debug, Serialize)]
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub client: &'a str,
    pub host: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    #[serde(serialize_with = "ms")]
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_ms")]
    pub upstream_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_error: Option<&'a str>,
    pub auth: &'a str,
}

/// Writes one access-log line, when the `access` target is enabled (`JWTGATE_LOG`). With the
/// JSON format the line is serialized here into a reused per-thread buffer and queued whole:
/// going through `tracing`'s field visitors cost about three times as many instructions per
/// request (callgrind). Otherwise (text format, or no [`init`], as in tests) it is an
/// ordinary `tracing` event.
pub fn access(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    if !JSON_ACCESS.load(Ordering::Relaxed) {
        tracing::info!(target: "access", "{line}");
        return;
    }
    thread_local! {
        static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    LINE.with_borrow_mut(|buf| {
        buf.clear();
        if line.write_json(buf).is_ok() {
            sink::push(buf, Kind::Access);
        }
    });
}

impl AccessLine<'_> {
    /// Appends the JSON line (with its `\n`) to `buf`.
    fn write_json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()> {
        let line = Line {
            time: Now,
            level: "info",
            target: "access",
            fields: self,
        };
        serde_json::to_writer(&mut *buf, &line)?;
        buf.push(b'\n');
        Ok(())
    }
}

/// The text format's line: `key=value` pairs, values quoted when they need it.
impl fmt::Display for AccessLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request_id={} client={} host={:?} route={:?} method={} path={:?} status={} \
             duration_ms={:.3} auth={}",
            self.request_id,
            self.client,
            self.host,
            self.route,
            self.method,
            self.path,
            self.status,
            self.duration_ms,
            self.auth
        )?;
        if let Some(t) = self.trace_id {
            write!(f, " trace_id={t}")?;
        }
        if let Some(ms) = self.upstream_ms {
            write!(f, " upstream_ms={ms:.3}")?;
        }
        if let Some(s) = self.upstream_status {
            write!(f, " upstream_status={s}")?;
        }
        if let Some(e) = self.upstream_error {
            write!(f, " upstream_error={e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(f: impl FnOnce(&mut Writer<'_>) -> fmt::Result) -> String {
        let mut out = String::new();
        f(&mut Writer::new(&mut out)).expect("formats");
        out
    }

    fn line_json(line: &AccessLine<'_>) -> String {
        let mut buf = Vec::new();
        line.write_json(&mut buf).expect("serializes");
        let text = String::from_utf8(buf).expect("UTF-8");
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text:?}"
        );
        text
    }

    #[test]
    fn milliseconds_print_like_f64_to_three_decimals() {
        for v in [
            0i64, 1, 10, 100, 999, 1000, 1500, 1230, 123_456, 7, -2500, 42_000_001,
        ] {
            let want = format!("{}", v as f64 / 1000.0);
            assert_eq!(render(|w| json(w, &Ms(v as f64 / 1000.0))), want, "{v}");
        }
        assert_eq!(render(|w| json(w, &Ms(1.23456))), "1.235");
        assert_eq!(render(|w| json(w, &Ms(f64::NAN))), "null");
        assert_eq!(render(|w| json(w, &Ms(f64::INFINITY))), "null");
    }

    #[test]
    fn strings_are_escaped_as_json() {
        for s in [
            "",
            "plain",
            "a\"b",
            "back\\slash",
            "nl\n\r\t",
            "\u{1}\u{7f}",
            "é✓",
        ] {
            let out = render(|w| json(w, &s));
            assert_eq!(out, render(|w| json(w, &Shown(format_args!("{s}")))));
            let back: String = serde_json::from_str(&out).expect("valid JSON string");
            assert_eq!(back, s);
        }
    }

    #[test]
    fn access_lines_are_json_objects_without_absent_fields() {
        let mut line = AccessLine {
            request_id: "r1",
            client: "192.0.2.7",
            host: "api.example.com",
            trace_id: None,
            route: "api",
            method: "GET",
            path: "/a\"b",
            status: 502,
            duration_ms: 1.23456,
            upstream_ms: None,
            upstream_status: None,
            upstream_error: Some("connect"),
            auth: "ok",
        };
        let v: serde_json::Value = serde_json::from_str(&line_json(&line)).expect("JSON line");
        assert_eq!(v["target"], "access");
        assert_eq!(v["level"], "info");
        assert_eq!(v["path"], "/a\"b");
        assert_eq!(v["status"], 502);
        assert_eq!(v["duration_ms"], 1.235);
        assert_eq!(v["upstream_error"], "connect");
        for absent in ["trace_id", "upstream_ms", "upstream_status"] {
            assert!(v.get(absent).is_none(), "{absent} in {v}");
        }
        line.trace_id = Some("0af7651916cd43dd8448eb211c80319c");
        line.upstream_ms = Some(0.5);
        line.upstream_status = Some(200);
        let v: serde_json::Value = serde_json::from_str(&line_json(&line)).expect("JSON line");
        assert_eq!(v["upstream_ms"], 0.5);
        assert_eq!(v["upstream_status"], 200);
        assert_eq!(v["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(&keys[..4], ["time", "level", "target", "request_id"]);
    }

    #[test]
    fn time_is_rfc3339_with_microseconds() {
        let t = render(|w| json(w, &Now));
        let t: String = serde_json::from_str(&t).expect("a JSON string");
        assert_eq!(t.len(), "2026-12-06T05:07:26.123456Z".len(), "{t}");
        humantime::parse_rfc3339(&t).expect("RFC 3339");
    }
}
