//! Logging for every part of the data flow, through `tracing`: `text` for people, `json` for
//! log pipelines, and `edge` for IoT Edge's `<6> 2026-11-26 07:00:00.000 +00:00 [INF] - text`
//! convention. `RUST_LOG` (or `RuntimeLogLevel` under IoT Edge) sets the level.

use std::fmt;
use std::time::SystemTime;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber (once; later calls are ignored).
pub fn init(format: LogFormat) {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        // The embedded broker (rumqttd) logs every client disconnect as an error: silent
        // unless RUST_LOG asks for it.
        Err(_) => EnvFilter::new(format!("{},rumqttd=off", edge_level().unwrap_or("info"))),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Edge => builder.event_format(EdgeFormat).try_init(),
    };
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

    #[test]
    fn levels_map_to_syslog_severities() {
        assert_eq!(edge_level_tag(&Level::INFO), (6, "INF"));
        assert_eq!(edge_level_tag(&Level::WARN), (4, "WRN"));
        assert_eq!(edge_level_tag(&Level::ERROR), (3, "ERR"));
    }
}
