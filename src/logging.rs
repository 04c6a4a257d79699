//! Log output: one JSON object per line (`time`, `level`, `target`, `message`, then the
//! event's fields), or plain text for people. Access-log lines are events with target `access`.

use std::fmt;

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

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
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

/// Writes the current time as RFC 3339 UTC with microseconds (`2026-12-06T05:07:26.123456Z`).
/// The date and time up to the second are formatted once per second per thread.
fn write_time(w: &mut Writer<'_>) -> fmt::Result {
    use std::cell::RefCell;
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
        // Milliseconds to the microsecond are plenty for a log line.
        let thousandths = (value * 1000.0).round();
        if thousandths.abs() < 1e15 {
            self.put(field, |w| write_thousandths(w, thousandths as i64));
        } else if value.is_finite() {
            self.put(field, |w| {
                write!(w, "{}", (value * 1000.0).round() / 1000.0)
            });
        } else {
            self.put(field, |w| w.write_str("null"));
        }
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
        writer.write_str("{\"time\":\"")?;
        write_time(&mut writer)?;
        writer.write_str(match *meta.level() {
            tracing::Level::ERROR => "\",\"level\":\"error\",\"target\":",
            tracing::Level::WARN => "\",\"level\":\"warn\",\"target\":",
            tracing::Level::INFO => "\",\"level\":\"info\",\"target\":",
            tracing::Level::DEBUG => "\",\"level\":\"debug\",\"target\":",
            tracing::Level::TRACE => "\",\"level\":\"trace\",\"target\":",
        })?;
        json_str(&mut writer, meta.target())?;
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
    let result = if format == "text" {
        builder.try_init()
    } else {
        builder.event_format(JsonLines).try_init()
    };
    if let Err(e) = result {
        eprintln!("jwtgate: logging already initialised: {e}");
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
    fn time_is_rfc3339_with_microseconds() {
        let t = render(write_time);
        assert_eq!(t.len(), "2026-12-06T05:07:26.123456Z".len(), "{t}");
        humantime::parse_rfc3339(&t).expect("RFC 3339");
    }
}
