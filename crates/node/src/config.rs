//! Node configuration: everything `once serve` can be told, in one struct the CLI fills.
//!
//! A few fields are read only by the Kafka edge (`listen`, `connections_max`, the request bounds);
//! they stay here so that one struct, filled in one place, configures a broker.
//! The node itself uses `listen` only as the advertised endpoint's default.

use std::path::PathBuf;

use crate::topic_config::TopicDefaults;

/// Largest request frame accepted by default (100 MiB, Kafka's socket.request.max.bytes default). The
/// Kafka edge's frame reader has the same default (`once_wire::frame::FRAME_BYTES_MAX_DEFAULT`); a
/// test in `once-broker` keeps the two equal.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 100 * 1024 * 1024;

/// Everything the broker is configured with. The CLI fills it from flags, `ONCE_*` variables and
/// `once.toml`; defaults are safe (every acknowledged write fsynced).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Address the listener binds, `HOST:PORT`.
    pub listen: String,
    /// Address put in Metadata for clients to connect to; the listen address when `None`.
    pub advertised_listener: Option<String>,
    /// Where topics, logs and broker metadata live.
    pub data_dir: PathBuf,
    /// This broker's id in Metadata.
    pub node_id: i32,
    /// Create a topic on first Metadata request for it (Kafka's auto.create.topics.enable).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic or a CreateTopics asking for -1 (Kafka's num.partitions).
    pub default_partitions: i32,
    /// Defaults for topic-level configs.
    pub topic_defaults: TopicDefaults,
    /// Open connections at most; further connections are closed at once.
    pub connections_max: usize,
    /// Largest request frame accepted (Kafka's socket.request.max.bytes).
    pub request_bytes_max: usize,
    /// Bytes of requests read but not yet answered, across all connections (Kafka's
    /// queued.max.request.bytes); readers wait when it is spent. At least `request_bytes_max`.
    pub queued_request_bytes_max: usize,
    /// A client connection that sends no request for this long, or takes no byte of a response for
    /// this long while one waits to be written, is closed (Kafka's connections.max.idle.ms). At least 1.
    pub connections_max_idle_ms: u64,
    /// How often segments past retention are deleted (and idle producers forgotten).
    pub retention_check_interval_ms: u64,
    /// A producer id with no batch newer than this is forgotten by each partition (Kafka's
    /// producer.id.expiration.ms): its retries then count as new writes.
    pub producer_id_expiration_ms: i64,
    /// Largest response a Fetch returns when the request asks for more (Kafka's fetch.max.bytes).
    pub fetch_bytes_max: usize,
    /// Largest transaction.timeout.ms a producer may ask for (Kafka's transaction.max.timeout.ms).
    pub transaction_max_timeout_ms: i32,
    /// How often the coordinator aborts timed-out transactions (Kafka's
    /// transaction.abort.timed.out.transaction.cleanup.interval.ms).
    pub transaction_abort_check_interval_ms: u64,
    /// A transactional id with no transaction for this long is forgotten (Kafka's
    /// transactional.id.expiration.ms).
    pub transactional_id_expiration_ms: i64,
    /// Free bytes the data directory's filesystem keeps: below it produce is refused (retriably)
    /// and internal writes use the rest. `None`: 1 GiB or 5 % of the filesystem, the smaller; 0: none.
    pub min_free_bytes: Option<u64>,
    /// Bytes made durable in a partition's active segment after which the upkeep rewrites the log's
    /// recovery checkpoint (see `once_log::Log::recovery_checkpoint_due`). At least 1.
    pub recovery_checkpoint_bytes: u64,
    /// `--listener`s; none means one PLAINTEXT listener on `listen`.
    pub listeners: Vec<crate::listeners::ListenerSpec>,
    /// Further `--advertised-listener`s in `NAME=PROTOCOL://HOST:PORT` form (matched by name).
    pub advertised_listeners: Vec<String>,
    /// TLS for SSL and SASL_SSL listeners.
    pub tls: Option<TlsFiles>,
    /// `--scram-user NAME:PASSWORD`: created with SCRAM-SHA-256 and -512 verifiers at start if absent.
    pub scram_users: Vec<(String, String)>,
    /// `--authorization`: check every request against the ACLs (deny by default); off allows all.
    pub authorization: bool,
    /// `--super-users`: principals allowed everything when authorization is on.
    pub super_users: Vec<once_acl::Principal>,
    /// Test hook: a crash point the broker kills itself at (`ONCE_TEST_CRASH_POINT`).
    pub test_crash_point: Option<String>,
    /// An HTTP listener serves (`--http-listen`, `--metrics-listen`): it checks Basic credentials
    /// against the same users as SASL, so the credential store is opened for it.
    pub http_users: bool,
}

/// PEM files of the broker's TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA whose certificates clients must present (mTLS); none: no client certificate asked.
    pub client_ca: Option<PathBuf>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: "127.0.0.1:9092".to_string(),
            advertised_listener: None,
            data_dir: PathBuf::from("once-data"),
            node_id: 0,
            auto_create_topics: true,
            default_partitions: 1,
            topic_defaults: TopicDefaults::default(),
            connections_max: 1024,
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            queued_request_bytes_max: 512 * 1024 * 1024,
            connections_max_idle_ms: 600_000,
            retention_check_interval_ms: 300_000,
            producer_id_expiration_ms: 86_400_000,
            fetch_bytes_max: 55 * 1024 * 1024,
            transaction_max_timeout_ms: 900_000,
            transaction_abort_check_interval_ms: 10_000,
            transactional_id_expiration_ms: 7 * 24 * 3600 * 1000,
            test_crash_point: None,
            min_free_bytes: None,
            recovery_checkpoint_bytes: crate::upkeep::RECOVERY_CHECKPOINT_BYTES,
            listeners: Vec::new(),
            advertised_listeners: Vec::new(),
            tls: None,
            scram_users: Vec::new(),
            authorization: false,
            super_users: Vec::new(),
            http_users: false,
        }
    }
}
