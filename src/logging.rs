//! Logging for every part of the data flow, through `tracing`: `text` for people, `json` for
//! log pipelines, and `edge` for IoT Edge's `<6> 2026-11-26 07:00:00.000 +00:00 [INF] - text`
//! convention. `RUST_LOG` (or `RuntimeLogLevel` under IoT Edge) sets the level.
//!
//! Logged fields carry text from the network (topics, client ids, broker reasons): in the text
//! and edge formats every control character in them is escaped ([`SafeFields`]), so a newline
//! in a topic cannot start a forged log line and an ANSI sequence cannot repaint a terminal.
//! The JSON format escapes them itself (JSON strings cannot hold raw control characters).

use std::fmt;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Installs the global subscriber (once; later calls are ignored).
pub fn init(format: LogFormat) {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        // The embedded broker (rmqtt, every `rmqtt*` target) logs each client's connection at
        // info: only its warnings unless RUST_LOG asks for more. What it drops is logged by
        // edgefilter's own hook.
        Err(_) => EnvFilter::new(format!("{},rmqtt=warn", edge_level().unwrap_or("info"))),
    };
    // Colours only on a terminal: in a file, journald or `docker logs` they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ =
        tracing::subscriber::set_global_default(subscriber(format, filter, ansi, std::io::stderr));
}

/// The subscriber of `format`, writing to `writer` (with colours when `ansi`).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_target(false).fmt_fields(SafeFields).finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
        LogFormat::Edge => Box::new(
            builder
                .event_format(EdgeFormat)
                .fmt_fields(SafeFields)
                .finish(),
        ),
    }
}

/// Formats an event's fields as tracing's default does (`message k=v k=v`), with every control
/// character in names and values escaped by [`EscapeControls`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SafeFields;

impl<'w> FormatFields<'w> for SafeFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = SafeVisitor {
            out: EscapeControls(&mut writer),
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct SafeVisitor<'a, W: fmt::Write> {
    out: EscapeControls<&'a mut W>,
    first: bool,
    result: fmt::Result,
}

impl<W: fmt::Write> Visit for SafeVisitor<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        use fmt::Write as _;
        let sep = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = match field.name() {
            "message" => write!(self.out, "{sep}{value:?}"),
            name if name.starts_with("log.") => Ok(()),
            name => write!(
                self.out,
                "{sep}{}={value:?}",
                name.strip_prefix("r#").unwrap_or(name)
            ),
        };
    }
}

/// A writer that escapes what would let logged text forge or repaint log lines: C0 controls
/// (newline, CR, ESC, …) and DEL as `\n`, `\r`, `\t` or `\x1b`; C1 controls (U+0080–U+009F,
/// NEL among them), the Unicode line and paragraph separators and the bidirectional overrides
/// as `\u{…}`.
pub struct EscapeControls<W>(pub W);

/// Whether `c` is written escaped by [`EscapeControls`].
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

impl<W: fmt::Write> fmt::Write for EscapeControls<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut clean = 0;
        for (i, c) in s.char_indices() {
            if !needs_escape(c) {
                continue;
            }
            self.0.write_str(&s[clean..i])?;
            clean = i + c.len_utf8();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c if (c as u32) < 0x80 => write!(self.0, "\\x{:02x}", c as u32)?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
        }
        self.0.write_str(&s[clean..])
    }
}

/// IoT Edge's `RuntimeLogLevel` variable, mapped to a tracing level.
fn edge_level() -> Option<&'static str> {
    let v = std::env::var("RuntimeLogLevel").ok()?;
    Some(match v.to_ascii_lowercase().as_str() {
        "debug" | "verbose" => "debug",
        "warning" => "warn",
        "error" | "fatal" => "error",
        _ => "info",
    })
}

/// `<{severity}> {yyyy-MM-dd HH:mm:ss.fff zzz} [{LVL}] - message`.
pub struct EdgeFormat;

/// Syslog severity and IoT Edge's three-letter level.
pub fn edge_level_tag(level: &Level) -> (u8, &'static str) {
    match *level {
        Level::ERROR => (3, "ERR"),
        Level::WARN => (4, "WRN"),
        Level::INFO => (6, "INF"),
        Level::DEBUG => (7, "DBG"),
        Level::TRACE => (7, "VRB"),
    }
}

/// `2026-11-26 07:00:00.000 +00:00` (UTC).
pub fn edge_timestamp(t: SystemTime) -> String {
    let mut iso = Vec::new();
    crate::sensor::write_iso8601(&mut iso, t);
    let iso = String::from_utf8_lossy(&iso);
    // 2026-11-26T07:00:00[.fffffff]Z
    let (date, rest) = iso.split_once('T').unwrap_or((&iso, "00:00:00Z"));
    let rest = rest.trim_end_matches('Z');
    let (hms, frac) = rest.split_once('.').unwrap_or((rest, ""));
    let millis: String = frac.chars().chain("000".chars()).take(3).collect();
    format!("{date} {hms}.{millis} +00:00")
}

impl<S, N> FormatEvent<S, N> for EdgeFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let (severity, tag) = edge_level_tag(event.metadata().level());
        write!(
            writer,
            "<{severity}> {} [{tag}] - ",
            edge_timestamp(SystemTime::now())
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// A topic for a log line: at most 200 characters, with the length when cut.
pub fn shorten(topic: &str) -> String {
    match topic.char_indices().nth(200) {
        Some((cut, _)) => format!("{}… ({} bytes)", &topic[..cut], topic.len()),
        None => topic.to_string(),
    }
}

/// An error and its causes on one line (`what: why: root cause`), for log lines.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn edge_timestamps_have_millisecond_precision() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_676_400_123);
        assert_eq!(edge_timestamp(t), "2026-11-26 07:00:00.123 +00:00");
        assert_eq!(edge_timestamp(UNIX_EPOCH), "1970-01-01 00:00:00.000 +00:00");
    }

    /// Log lines written into memory.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What one event with hostile text in every kind of field looks like in `format`.
    fn log_hostile(format: LogFormat) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let sub = subscriber(format, EnvFilter::new("info"), false, move || {
            writer.clone()
        });
        let topic = "telemetry/x\n[INF] forged line\r\u{1b}[2K\u{85}\u{2028}\u{202e}";
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(
                client = topic,
                shown = %topic,
                debugged = ?topic,
                "rejected a message on {topic} (not_json): bad\nbody"
            );
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn control_characters_in_fields_cannot_forge_lines() {
        for format in [LogFormat::Text, LogFormat::Edge, LogFormat::Json] {
            let text = log_hostile(format);
            assert_eq!(text.lines().count(), 1, "{format:?}: {text}");
            assert!(text.ends_with('\n'), "{format:?}: {text}");
            let line = text.trim_end_matches('\n');
            for c in line.chars() {
                // JSON escapes C0 controls; C1 and Unicode separators stay (they break no line).
                if format != LogFormat::Json || c < '\u{80}' {
                    assert!(!needs_escape(c), "{format:?}: raw {c:?} in {line}");
                }
            }
            assert!(line.contains("forged line"), "{format:?}: {line}");
        }
        let edge = log_hostile(LogFormat::Edge);
        assert!(edge.starts_with("<4> "), "{edge}");
        assert!(
            edge.contains(r"rejected a message on telemetry/x\n[INF] forged line\r\x1b[2K\u{85}\u{2028}\u{202e} (not_json): bad\nbody"),
            "{edge}"
        );
        assert!(edge.contains(r"shown=telemetry/x\n[INF]"), "{edge}");
        let json: serde_json::Value = serde_json::from_str(&log_hostile(LogFormat::Json)).unwrap();
        assert!(json["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("x\n[INF] forged line\r"));
    }

    #[test]
    fn plain_text_is_written_unchanged() {
        let mut s = String::new();
        use std::fmt::Write as _;
        write!(EscapeControls(&mut s), "température 25.5 °C, a\\b \"q\"").unwrap();
        assert_eq!(s, "température 25.5 °C, a\\b \"q\"");
        s.clear();
        write!(EscapeControls(&mut s), "\u{0}\u{7f}\u{9b}\t").unwrap();
        assert_eq!(s, r"\x00\x7f\u{9b}\t");
    }

    #[test]
    fn levels_map_to_syslog_severities() {
        assert_eq!(edge_level_tag(&Level::INFO), (6, "INF"));
        assert_eq!(edge_level_tag(&Level::WARN), (4, "WRN"));
        assert_eq!(edge_level_tag(&Level::ERROR), (3, "ERR"));
    }
}
