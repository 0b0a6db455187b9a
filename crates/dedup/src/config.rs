//! The two per-topic configs: `dedup.source` ([`DedupSource`]) and `dedup.window.ms`
//! ([`DedupWindow`]), parsed from and displayed to their exact config strings.

use std::fmt;
use std::str::FromStr;

use crate::error::DedupError;

/// Config name of the id source.
pub const DEDUP_SOURCE_CONFIG: &str = "dedup.source";
/// Config name of the window.
pub const DEDUP_WINDOW_MS_CONFIG: &str = "dedup.window.ms";

/// Where a record's message id comes from (`dedup.source`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum DedupSource {
    /// `none` (the default): no deduplication; every record has no id.
    #[default]
    None,
    /// `header:NAME`: the value of the record header NAME (the last one if repeated, as Kafka's
    /// `Headers.lastHeader`). A record without it, or with a null value, has no id.
    Header(String),
    /// `key`: the record key. A null key means no id.
    Key,
    /// `content`: the record value, like SQS content-based deduplication. A null value
    /// (a tombstone) means no id.
    Content,
}

impl DedupSource {
    /// True unless `none`.
    pub fn is_enabled(&self) -> bool {
        !matches!(self, DedupSource::None)
    }
}

impl FromStr for DedupSource {
    type Err = DedupError;

    fn from_str(value: &str) -> Result<DedupSource, DedupError> {
        match value {
            "none" => Ok(DedupSource::None),
            "key" => Ok(DedupSource::Key),
            "content" => Ok(DedupSource::Content),
            _ => match value.strip_prefix("header:") {
                Some(name) if !name.is_empty() => Ok(DedupSource::Header(name.to_string())),
                Some(_) => Err(DedupError::InvalidConfig {
                    name: DEDUP_SOURCE_CONFIG,
                    value: value.to_string(),
                    reason: "header:NAME needs a non-empty header name".to_string(),
                }),
                None => Err(DedupError::InvalidConfig {
                    name: DEDUP_SOURCE_CONFIG,
                    value: value.to_string(),
                    reason: "expected one of none, key, content, header:NAME".to_string(),
                }),
            },
        }
    }
}

impl fmt::Display for DedupSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DedupSource::None => f.write_str("none"),
            DedupSource::Header(name) => write!(f, "header:{name}"),
            DedupSource::Key => f.write_str("key"),
            DedupSource::Content => f.write_str("content"),
        }
    }
}

/// How long a stored id keeps deduplicating (`dedup.window.ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DedupWindow {
    /// A positive number of milliseconds, measured from the record batch's max timestamp.
    Duration {
        /// Window length in milliseconds, at least 1.
        window_ms: i64,
    },
    /// `-1`: as long as the record is retained in the log (until the partition's log start
    /// offset passes it).
    Retention,
}

impl DedupWindow {
    /// The config value `-1` or a positive number of milliseconds; anything else is rejected.
    pub fn from_ms(window_ms: i64) -> Result<DedupWindow, DedupError> {
        match window_ms {
            -1 => Ok(DedupWindow::Retention),
            1.. => Ok(DedupWindow::Duration { window_ms }),
            _ => Err(DedupError::InvalidConfig {
                name: DEDUP_WINDOW_MS_CONFIG,
                value: window_ms.to_string(),
                reason: "expected a positive number of milliseconds, or -1 for as long as retained".to_string(),
            }),
        }
    }

    /// The config value: milliseconds, or -1.
    pub fn as_ms(&self) -> i64 {
        match self {
            DedupWindow::Duration { window_ms } => *window_ms,
            DedupWindow::Retention => -1,
        }
    }

    /// True if an id stored at `time_s` (whole seconds, see the crate docs) is still inside the
    /// window at `now_ms`.
    pub(crate) fn covers(&self, time_s: u32, now_ms: i64) -> bool {
        match self {
            DedupWindow::Retention => true,
            DedupWindow::Duration { window_ms } => {
                i64::from(time_s).saturating_mul(1000).saturating_add(*window_ms) > now_ms
            }
        }
    }
}

impl FromStr for DedupWindow {
    type Err = DedupError;

    fn from_str(value: &str) -> Result<DedupWindow, DedupError> {
        let window_ms: i64 = value.trim().parse().map_err(|_| DedupError::InvalidConfig {
            name: DEDUP_WINDOW_MS_CONFIG,
            value: value.to_string(),
            reason: "expected an integer number of milliseconds, or -1".to_string(),
        })?;
        DedupWindow::from_ms(window_ms)
    }
}

impl fmt::Display for DedupWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_round_trip_exactly() {
        for text in ["none", "key", "content", "header:msg-id", "header:a:b", "header: spaced "] {
            let source: DedupSource = text.parse().expect("accepted");
            assert_eq!(source.to_string(), text);
        }
        assert_eq!("header:x".parse::<DedupSource>().expect("header"), DedupSource::Header("x".into()));
        assert_eq!(DedupSource::default(), DedupSource::None);
        assert!(!DedupSource::None.is_enabled());
        assert!(DedupSource::Key.is_enabled());
    }

    #[test]
    fn bad_sources_are_rejected_with_a_message() {
        for text in ["", "None", "KEY", "value", "header:", "header", "headers:x", " key", "key "] {
            let error = text.parse::<DedupSource>().expect_err(text);
            let message = error.to_string();
            assert!(message.contains("dedup.source"), "{message}");
            assert!(matches!(error, DedupError::InvalidConfig { .. }));
        }
        let message = "header:".parse::<DedupSource>().expect_err("empty").to_string();
        assert!(message.contains("non-empty header name"), "{message}");
        let message = "bogus".parse::<DedupSource>().expect_err("bogus").to_string();
        assert!(message.contains("none, key, content, header:NAME"), "{message}");
    }

    #[test]
    fn windows_parse_and_display() {
        assert_eq!("-1".parse::<DedupWindow>().expect("-1"), DedupWindow::Retention);
        assert_eq!("60000".parse::<DedupWindow>().expect("ms"), DedupWindow::Duration { window_ms: 60_000 });
        assert_eq!(DedupWindow::Retention.to_string(), "-1");
        assert_eq!(DedupWindow::Duration { window_ms: 5 }.to_string(), "5");
        for bad in ["0", "-2", "1.5", "", "ten"] {
            assert!(bad.parse::<DedupWindow>().is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn window_covers_at_least_its_length() {
        let window = DedupWindow::Duration { window_ms: 1_000 };
        // Stored at second 10 (a batch timestamped in (9000, 10000] ms).
        assert!(window.covers(10, 10_999));
        assert!(!window.covers(10, 11_000));
        assert!(DedupWindow::Retention.covers(0, i64::MAX));
    }
}
