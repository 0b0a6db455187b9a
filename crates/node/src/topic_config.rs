//! Topic configuration: the keys Once understands, their defaults, validation, and the log settings
//! they turn into. A topic stores only its overrides; everything else comes from the broker defaults.

use std::collections::BTreeMap;

use once_dedup::{DedupSource, DedupWindow, DEDUP_SOURCE_CONFIG, DEDUP_WINDOW_MS_CONFIG};
use once_log::LogConfig;

/// Kafka's `ConfigType` values, as DescribeConfigs v3+ reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    List = 7,
}

/// One topic-level key.
pub struct ConfigKey {
    pub name: &'static str,
    pub config_type: ConfigType,
    pub documentation: &'static str,
    validate: fn(&str) -> Result<(), String>,
}

fn long_at_least(value: &str, minimum: i64) -> Result<(), String> {
    let parsed: i64 = value.trim().parse().map_err(|_| format!("'{value}' is not a whole number"))?;
    if parsed < minimum {
        return Err(format!("{parsed} is below the minimum {minimum}"));
    }
    Ok(())
}

fn duration_or_unlimited(value: &str) -> Result<(), String> {
    long_at_least(value, -1)
}

fn cleanup_policy(value: &str) -> Result<(), String> {
    match value.trim() {
        "delete" => Ok(()),
        other => Err(format!("cleanup.policy '{other}' is not supported (Once supports 'delete' only)")),
    }
}

fn timestamp_type(value: &str) -> Result<(), String> {
    match value.trim() {
        "CreateTime" => Ok(()),
        other => Err(format!("message.timestamp.type '{other}' is not supported (Once stores CreateTime)")),
    }
}

fn one(value: &str) -> Result<(), String> {
    match value.trim() {
        "1" => Ok(()),
        other => Err(format!("min.insync.replicas must be 1 on a single broker, not '{other}'")),
    }
}

fn boolean(value: &str) -> Result<(), String> {
    match value {
        "true" | "false" => Ok(()),
        other => Err(format!("'{other}' is not true or false")),
    }
}

/// Whether an HTTP produce to the topic must carry an `Idempotency-Key` (once-http).
pub const IDEMPOTENCY_KEY_REQUIRED_CONFIG: &str = "http.idempotency.key.required";

fn dedup_source(value: &str) -> Result<(), String> {
    value.parse::<DedupSource>().map(|_| ()).map_err(|error| error.to_string())
}

fn dedup_window(value: &str) -> Result<(), String> {
    value.parse::<DedupWindow>().map(|_| ()).map_err(|error| error.to_string())
}

/// Every topic key Once accepts. Unknown keys are refused with INVALID_CONFIG, never silently ignored.
pub const CONFIG_KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "cleanup.policy",
        config_type: ConfigType::List,
        documentation: "Only 'delete' (segments deleted whole past retention).",
        validate: cleanup_policy,
    },
    ConfigKey {
        name: "retention.ms",
        config_type: ConfigType::Long,
        documentation: "Delete segments whose newest record is older than this; -1 keeps forever.",
        validate: duration_or_unlimited,
    },
    ConfigKey {
        name: "retention.bytes",
        config_type: ConfigType::Long,
        documentation: "Delete oldest segments while the partition is larger than this; -1 is unlimited.",
        validate: duration_or_unlimited,
    },
    ConfigKey {
        name: "segment.bytes",
        config_type: ConfigType::Int,
        documentation: "Roll to a new segment file at this size.",
        validate: |value| long_at_least(value, 1024),
    },
    ConfigKey {
        name: "segment.ms",
        config_type: ConfigType::Long,
        documentation: "Roll to a new segment when the active one is this old.",
        validate: |value| long_at_least(value, 1),
    },
    ConfigKey {
        name: "max.message.bytes",
        config_type: ConfigType::Int,
        documentation: "Largest record batch accepted.",
        validate: |value| long_at_least(value, 0),
    },
    ConfigKey {
        name: "message.timestamp.type",
        config_type: ConfigType::String,
        documentation: "Only CreateTime.",
        validate: timestamp_type,
    },
    ConfigKey {
        name: "min.insync.replicas",
        config_type: ConfigType::Int,
        documentation: "Always 1: a single broker, every acknowledged write fsynced.",
        validate: one,
    },
    ConfigKey {
        name: DEDUP_SOURCE_CONFIG,
        config_type: ConfigType::String,
        documentation: "Message-id deduplication: none, header:NAME, key or content. A record whose id was \
                        already stored within dedup.window.ms is not stored again. Set at creation only.",
        validate: dedup_source,
    },
    ConfigKey {
        name: DEDUP_WINDOW_MS_CONFIG,
        config_type: ConfigType::Long,
        documentation: "How long a stored message id deduplicates, from its batch's timestamp; -1 for as long \
                        as its record is retained.",
        validate: dedup_window,
    },
    ConfigKey {
        name: IDEMPOTENCY_KEY_REQUIRED_CONFIG,
        config_type: ConfigType::Boolean,
        documentation: "true: an HTTP produce (POST …/records) without an Idempotency-Key header is refused \
                        with 400. Needs dedup.source=header:NAME to be useful.",
        validate: boolean,
    },
];

pub fn key(name: &str) -> Option<&'static ConfigKey> {
    CONFIG_KEYS.iter().find(|key| key.name == name)
}

/// Checks one `name = value` pair.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let key = key(name).ok_or_else(|| format!("unknown topic config '{name}'"))?;
    (key.validate)(value).map_err(|reason| format!("invalid value for {name}: {reason}"))
}

/// Broker-wide defaults for topic keys (from the broker configuration).
#[derive(Debug, Clone)]
pub struct TopicDefaults {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub max_message_bytes: i64,
    /// Benchmarks only: appends are acknowledged without fsync.
    pub unsafe_skip_fsync: bool,
    /// Bytes of RAM each deduplicating topic's index may hold before its sealed chunks move to disk
    /// (`--dedup-memory-bytes`; a broker setting, not a topic config).
    pub dedup_memory_bytes: usize,
    /// Zeros written ahead of a partition's active segment at most at a time
    /// (`--log-zero-ahead-bytes`, `LogConfig::zero_ahead_bytes`; a broker setting, not a topic config).
    pub log_zero_ahead_bytes: u64,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            max_message_bytes: 1_048_588,
            unsafe_skip_fsync: false,
            dedup_memory_bytes: once_partition::DEDUP_MEMORY_BYTES_DEFAULT,
            log_zero_ahead_bytes: LogConfig::default().zero_ahead_bytes,
        }
    }
}

impl TopicDefaults {
    /// The default value of a key, as text.
    pub fn value_of(&self, name: &str) -> Option<String> {
        Some(match name {
            "cleanup.policy" => "delete".to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.type" => "CreateTime".to_string(),
            "min.insync.replicas" => "1".to_string(),
            DEDUP_SOURCE_CONFIG => DedupSource::None.to_string(),
            DEDUP_WINDOW_MS_CONFIG => DedupWindow::Retention.to_string(),
            IDEMPOTENCY_KEY_REQUIRED_CONFIG => "false".to_string(),
            _ => return None,
        })
    }
}

/// A topic's effective configuration: its overrides over the broker defaults.
#[derive(Debug, Clone)]
pub struct TopicConfig {
    pub overrides: BTreeMap<String, String>,
    pub defaults: TopicDefaults,
}

impl TopicConfig {
    pub fn new(overrides: BTreeMap<String, String>, defaults: TopicDefaults) -> Self {
        TopicConfig { overrides, defaults }
    }

    /// The effective value of a key and whether it is an override.
    pub fn value_of(&self, name: &str) -> Option<(String, bool)> {
        match self.overrides.get(name) {
            Some(value) => Some((value.clone(), true)),
            None => self.defaults.value_of(name).map(|value| (value, false)),
        }
    }

    fn long(&self, name: &str) -> i64 {
        self.value_of(name).and_then(|(value, _)| value.trim().parse().ok()).unwrap_or(-1)
    }

    /// `dedup.source` (validated when set, so a bad stored value means `none` only if edited by hand).
    pub fn dedup_source(&self) -> DedupSource {
        self.value_of(DEDUP_SOURCE_CONFIG).and_then(|(value, _)| value.parse().ok()).unwrap_or_default()
    }

    /// `dedup.window.ms`.
    pub fn dedup_window(&self) -> DedupWindow {
        self.value_of(DEDUP_WINDOW_MS_CONFIG)
            .and_then(|(value, _)| value.parse().ok())
            .unwrap_or(DedupWindow::Retention)
    }

    /// `http.idempotency.key.required`.
    pub fn idempotency_key_required(&self) -> bool {
        self.value_of(IDEMPOTENCY_KEY_REQUIRED_CONFIG).is_some_and(|(value, _)| value == "true")
    }

    pub fn max_message_bytes(&self) -> usize {
        usize::try_from(self.long("max.message.bytes")).unwrap_or(0)
    }

    /// The settings the partition log runs with.
    pub fn log_config(&self) -> LogConfig {
        let positive = |value: i64| u64::try_from(value).ok();
        let mut config = LogConfig::default();
        config.segment_bytes_max = positive(self.long("segment.bytes")).unwrap_or(config.segment_bytes_max);
        config.segment_ms_max = positive(self.long("segment.ms"));
        config.retention_ms = positive(self.long("retention.ms"));
        config.retention_bytes = positive(self.long("retention.bytes"));
        config.unsafe_skip_fsync = self.defaults.unsafe_skip_fsync;
        config.zero_ahead_bytes = self.defaults.log_zero_ahead_bytes;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("cleanup.policy", "compact").is_err());
        assert!(validate("no.such.key", "1").is_err());
        assert!(validate("segment.bytes", "100").is_err());
        for good in ["none", "key", "content", "header:msg-id"] {
            assert!(validate("dedup.source", good).is_ok(), "{good}");
        }
        for bad in ["", "value", "header:", "KEY"] {
            assert!(validate("dedup.source", bad).is_err(), "{bad}");
        }
        assert!(validate("dedup.window.ms", "-1").is_ok());
        assert!(validate("dedup.window.ms", "60000").is_ok());
        for bad in ["0", "-2", "1m"] {
            assert!(validate("dedup.window.ms", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dedup_defaults_and_overrides() {
        let config = TopicConfig::new(BTreeMap::new(), TopicDefaults::default());
        assert_eq!(config.dedup_source(), DedupSource::None);
        assert_eq!(config.dedup_window(), DedupWindow::Retention);
        assert_eq!(config.value_of("dedup.source"), Some(("none".to_string(), false)));
        let overrides = BTreeMap::from([
            ("dedup.source".to_string(), "header:id".to_string()),
            ("dedup.window.ms".to_string(), "5000".to_string()),
        ]);
        let config = TopicConfig::new(overrides, TopicDefaults::default());
        assert_eq!(config.dedup_source(), DedupSource::Header("id".into()));
        assert_eq!(config.dedup_window(), DedupWindow::Duration { window_ms: 5_000 });
    }

    #[test]
    fn overrides_win_and_map_to_log_config() {
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "-1".to_string());
        overrides.insert("segment.bytes".to_string(), "4096".to_string());
        let config = TopicConfig::new(overrides, TopicDefaults::default());
        let log = config.log_config();
        assert_eq!(log.retention_ms, None);
        assert_eq!(log.segment_bytes_max, 4096);
        assert_eq!(config.value_of("retention.ms"), Some(("-1".to_string(), true)));
        assert_eq!(config.value_of("retention.bytes"), Some(("-1".to_string(), false)));
        assert_eq!(log.zero_ahead_bytes, 256 << 10, "zeros ahead by default");
        let off = TopicDefaults { log_zero_ahead_bytes: 0, ..TopicDefaults::default() };
        assert_eq!(TopicConfig::new(BTreeMap::new(), off).log_config().zero_ahead_bytes, 0, "the broker's setting");
    }
}
