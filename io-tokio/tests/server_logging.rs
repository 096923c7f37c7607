//! Logs at LOG_LEVEL, human-readable by default, JSON on request.

use std::io::Write;
use std::sync::{Arc, Mutex};

use effectful_tokio::server::{LogFormat, log_subscriber};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

fn log_some(level: LevelFilter, format: LogFormat) -> String {
    let out = Captured::default();
    tracing::subscriber::with_default(log_subscriber(level, format, out.clone()), || {
        tracing::debug!("a debug line");
        tracing::info!(route = "/uuid", "an info line");
        tracing::warn!("a warning line");
    });
    out.text()
}

#[test]
fn lines_below_log_level_are_dropped() {
    let text = log_some(LevelFilter::WARN, LogFormat::Text);
    assert!(text.contains("a warning line"), "{text}");
    assert!(!text.contains("an info line"), "{text}");
    assert!(!text.contains("a debug line"), "{text}");
    let text = log_some(LevelFilter::DEBUG, LogFormat::Text);
    assert!(text.contains("a debug line"), "{text}");
}

#[test]
fn text_is_the_human_readable_default() {
    let text = log_some(LevelFilter::INFO, LogFormat::Text);
    let line = text
        .lines()
        .find(|l| l.contains("an info line"))
        .expect("the info line");
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("route=\"/uuid\""), "{line}");
    assert!(
        serde_json::from_str::<serde_json::Value>(line).is_err(),
        "{line}"
    );
}

#[test]
fn json_writes_one_object_per_line_with_level_message_and_fields() {
    let text = log_some(LevelFilter::INFO, LogFormat::Json);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["level"], "INFO");
    assert_eq!(lines[0]["message"], "an info line");
    assert_eq!(lines[0]["route"], "/uuid");
    assert!(lines[0]["timestamp"].is_string(), "{text}");
    assert_eq!(lines[1]["level"], "WARN");
}
