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
/// every access-log line and needs no allocation.
fn json_str(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    w.write_char('"')?;
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        w.write_str(&s[start..i])?;
        if esc.is_empty() {
            write!(w, "\\u{b:04x}")?;
        } else {
            w.write_str(esc)?;
        }
        start = i + 1;
    }
    w.write_str(&s[start..])?;
    w.write_char('"')
}

struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.w.write_char(',')?;
        json_str(self.w, field.name())?;
        self.w.write_char(':')
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
        self.put(field, |w| write!(w, "{value}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| write!(w, "{value}"));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            // Milliseconds to the microsecond are plenty for a log line.
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
        write!(
            writer,
            "{{\"time\":\"{}\",\"level\":\"{}\",\"target\":",
            humantime::format_rfc3339_micros(std::time::SystemTime::now()),
            match *meta.level() {
                tracing::Level::ERROR => "error",
                tracing::Level::WARN => "warn",
                tracing::Level::INFO => "info",
                tracing::Level::DEBUG => "debug",
                tracing::Level::TRACE => "trace",
            }
        )?;
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
