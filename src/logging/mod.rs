//! Log output: one JSON object per line (`time`, `level`, `target`, `message`, then the
//! event's fields), or plain text for people. Access-log lines have target `access`; in JSON
//! they are written by [`access`] directly, the same shape as every other line.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Formats events as JSON lines whose first member is `time` (RFC 3339, UTC). Written straight
/// into the output buffer: this runs once per request for the access log.
pub struct JsonLines;

/// Writes `s` as a JSON string (quotes included). Hand-written because it is the hot part of
/// every access-log line and needs no allocation: runs without a character to escape (most
/// values are one such run) go out in one write.
fn json_str(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    w.write_char('"')?;
    let mut rest = s;
    while let Some(i) = rest.bytes().position(needs_escape) {
        // `i` is an ASCII byte, so both slices fall on character boundaries.
        w.write_str(&rest[..i])?;
        match rest.as_bytes()[i] {
            b'"' => w.write_str("\\\"")?,
            b'\\' => w.write_str("\\\\")?,
            b'\n' => w.write_str("\\n")?,
            b'\r' => w.write_str("\\r")?,
            b'\t' => w.write_str("\\t")?,
            b => write!(w, "\\u{b:04x}")?,
        }
        rest = &rest[i + 1..];
    }
    w.write_str(rest)?;
    w.write_char('"')
}

/// The bytes a JSON string must escape (control characters, `"`, `\\`; DEL too, for
/// terminals), as a table: one load per byte instead of four comparisons.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0x7f] = true;
    t
};

fn needs_escape(b: u8) -> bool {
    NEEDS_ESCAPE[usize::from(b)]
}

/// Writes `thousandths / 1000` as the shortest decimal (`12`, `0.5`, `3.142`), the way `f64`
/// displays it, from integers: float formatting cost more than the rest of a log line.
fn write_thousandths(w: &mut Writer<'_>, thousandths: i64) -> fmt::Result {
    if thousandths < 0 {
        w.write_char('-')?;
    }
    let v = thousandths.unsigned_abs();
    w.write_str(itoa::Buffer::new().format(v / 1000))?;
    let frac = v % 1000;
    if frac != 0 {
        let digits = [
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let len = 4 - digits.iter().rev().take_while(|&&d| d == b'0').count();
        w.write_str(std::str::from_utf8(&digits[..len]).map_err(|_| fmt::Error)?)?;
    }
    Ok(())
}

/// Writes the members every line starts with: `{"time":…,"level":…,"target":…`.
fn write_line_start(w: &mut Writer<'_>, level: tracing::Level, target: &str) -> fmt::Result {
    w.write_str("{\"time\":\"")?;
    write_time(w)?;
    w.write_str(match level {
        tracing::Level::ERROR => "\",\"level\":\"error\",\"target\":",
        tracing::Level::WARN => "\",\"level\":\"warn\",\"target\":",
        tracing::Level::INFO => "\",\"level\":\"info\",\"target\":",
        tracing::Level::DEBUG => "\",\"level\":\"debug\",\"target\":",
        tracing::Level::TRACE => "\",\"level\":\"trace\",\"target\":",
    })?;
    json_str(w, target)
}

/// Writes a number rounded to three decimals (milliseconds to the microsecond are plenty for
/// a log line); `null` when it is not finite.
fn write_ms(w: &mut Writer<'_>, value: f64) -> fmt::Result {
    let thousandths = (value * 1000.0).round();
    if thousandths.abs() < 1e15 {
        write_thousandths(w, thousandths as i64)
    } else if value.is_finite() {
        write!(w, "{}", thousandths / 1000.0)
    } else {
        w.write_str("null")
    }
}

/// Writes the current time as RFC 3339 UTC with microseconds (`2026-12-06T05:07:26.123456Z`).
/// The date and time up to the second are formatted once per second per thread.
fn write_time(w: &mut Writer<'_>) -> fmt::Result {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            *text = humantime::format_rfc3339_seconds(t).to_string();
            text.pop(); // the `Z`, written after the fraction
            *cached = secs;
        }
        w.write_str(text)
    })?;
    let micros = since.subsec_micros();
    let mut frac = *b".000000Z";
    let mut m = micros;
    for d in frac[1..7].iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    w.write_str(std::str::from_utf8(&frac).map_err(|_| fmt::Error)?)
}

struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        // Field names are Rust identifiers: nothing to escape.
        self.w.write_str(",\"")?;
        self.w.write_str(field.name())?;
        self.w.write_str("\":")
    }

    fn put(&mut self, field: &Field, f: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| f(self.w));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |w| json_str(w, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, |w| write_ms(w, value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| write!(w, "{value}"));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |w| json_str(w, &format!("{value:?}")));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, |w| json_str(w, &value.to_string()));
    }
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

/// Installs the global subscriber: `format` is `json` or `text`; the level comes from
/// `JWTGATE_LOG` (an `EnvFilter` directive such as `info` or `jwtgate=debug,access=off`),
/// else `level`.
pub fn init(format: &str, level: &str) {
    let filter = EnvFilter::try_from_env("JWTGATE_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
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

/// True once [`init`] installed the JSON format: [`access`] then writes its lines itself.
static JSON_ACCESS: AtomicBool = AtomicBool::new(false);

/// One access-log line (target `access`). Absent options are left out of the line.
#[derive(Debug)]
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub client: &'a str,
    pub host: &'a str,
    pub trace_id: Option<&'a str>,
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub upstream_status: Option<u16>,
    pub upstream_error: Option<&'a str>,
    pub auth: &'a str,
}

/// Writes one access-log line, when the `access` target is enabled (`JWTGATE_LOG`). With the
/// JSON format the line is formatted here, the same as [`JsonLines`] would, and written to
/// stdout in one call: going through `tracing`'s field visitors cost about three times as many
/// instructions per request (callgrind). Otherwise (text format, or no [`init`], as in tests)
/// it is an ordinary `tracing` event.
pub fn access(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    if !JSON_ACCESS.load(Ordering::Relaxed) {
        tracing::info!(target: "access", "{line}");
        return;
    }
    thread_local! {
        static LINE: RefCell<String> = const { RefCell::new(String::new()) };
    }
    LINE.with_borrow_mut(|buf| {
        buf.clear();
        if line.write_json(&mut Writer::new(buf)).is_ok() {
            // A failed write to stdout (a closed pipe) must not fail the request.
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), buf.as_bytes());
        }
    });
}

impl AccessLine<'_> {
    fn write_json(&self, w: &mut Writer<'_>) -> fmt::Result {
        write_line_start(w, tracing::Level::INFO, "access")?;
        w.write_str(",\"request_id\":")?;
        json_str(w, self.request_id)?;
        w.write_str(",\"client\":")?;
        json_str(w, self.client)?;
        w.write_str(",\"host\":")?;
        json_str(w, self.host)?;
        if let Some(t) = self.trace_id {
            w.write_str(",\"trace_id\":")?;
            json_str(w, t)?;
        }
        w.write_str(",\"route\":")?;
        json_str(w, self.route)?;
        w.write_str(",\"method\":")?;
        json_str(w, self.method)?;
        w.write_str(",\"path\":")?;
        json_str(w, self.path)?;
        w.write_str(",\"status\":")?;
        w.write_str(itoa::Buffer::new().format(self.status))?;
        w.write_str(",\"duration_ms\":")?;
        write_ms(w, self.duration_ms)?;
        if let Some(ms) = self.upstream_ms {
            w.write_str(",\"upstream_ms\":")?;
            write_ms(w, ms)?;
        }
        if let Some(s) = self.upstream_status {
            w.write_str(",\"upstream_status\":")?;
            w.write_str(itoa::Buffer::new().format(s))?;
        }
        if let Some(e) = self.upstream_error {
            w.write_str(",\"upstream_error\":")?;
            json_str(w, e)?;
        }
        w.write_str(",\"auth\":")?;
        json_str(w, self.auth)?;
        w.write_str("}\n")
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

    #[test]
    fn thousandths_print_like_f64() {
        for v in [
            0i64, 1, 10, 100, 999, 1000, 1500, 1230, 123_456, 7, -2500, 42_000_001,
        ] {
            let want = format!("{}", v as f64 / 1000.0);
            assert_eq!(render(|w| write_thousandths(w, v)), want, "{v}");
        }
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
            let out = render(|w| json_str(w, s));
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
        let v: serde_json::Value =
            serde_json::from_str(&render(|w| line.write_json(w))).expect("JSON line");
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
        let v: serde_json::Value =
            serde_json::from_str(&render(|w| line.write_json(w))).expect("JSON line");
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
        let t = render(write_time);
        assert_eq!(t.len(), "2026-12-06T05:07:26.123456Z".len(), "{t}");
        humantime::parse_rfc3339(&t).expect("RFC 3339");
    }
}
