//! `once serve`: configuration and the runtime.
//!
//! Every option comes, in this order of precedence, from its flag, its `ONCE_*` environment variable,
//! the config file (`--config`, or `once.toml` in the working directory if present), or its default.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use once_broker::Server;
use once_node::topic_config::TopicDefaults;
use once_node::{Node, NodeConfig};
use serde::Deserialize;

/// Options of `once serve`. Names in `once.toml` are the long flag names with `_` for `-`.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeArgs {
    /// Config file (TOML); defaults to ./once.toml when that exists.
    #[arg(long, env = "ONCE_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Address to listen on, HOST:PORT [default: 127.0.0.1:9092].
    #[arg(long, env = "ONCE_LISTEN", value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address clients are told to connect to (Metadata, FindCoordinator): HOST:PORT for the first
    /// listener, or NAME=PROTOCOL://HOST:PORT (PROTOCOL://HOST:PORT) for the listener of that name;
    /// repeatable [default: each listener's own address].
    #[arg(long, env = "ONCE_ADVERTISED_LISTENER", value_name = "ADDRESS", value_delimiter = ',')]
    #[serde(default, deserialize_with = "one_or_many")]
    advertised_listener: Vec<String>,
    /// A listener: PROTOCOL://HOST:PORT or NAME=PROTOCOL://HOST:PORT, PROTOCOL one of PLAINTEXT,
    /// SSL, SASL_PLAINTEXT, SASL_SSL; repeatable [default: PLAINTEXT on --listen].
    #[arg(long = "listener", env = "ONCE_LISTENER", value_name = "LISTENER", value_delimiter = ',')]
    #[serde(default, deserialize_with = "one_or_many")]
    listener: Vec<String>,
    /// TLS certificate chain (PEM, leaf first) for SSL and SASL_SSL listeners.
    #[arg(long, env = "ONCE_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "ONCE_TLS_KEY", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// CA of the client certificates to require and verify (mTLS) on SSL listeners (SASL_SSL ones
    /// authenticate with SASL and ask for none, as Kafka's).
    #[arg(long, env = "ONCE_TLS_CLIENT_CA", value_name = "PEM")]
    tls_client_ca: Option<PathBuf>,
    /// NAME:PASSWORD: a SCRAM-SHA-256 and SCRAM-SHA-512 user created at start if it has no
    /// credentials yet (an existing user's password is not changed); repeatable.
    #[arg(long, env = "ONCE_SCRAM_USER", value_name = "NAME:PASSWORD")]
    #[serde(default, deserialize_with = "one_or_many")]
    scram_user: Vec<String>,
    /// Check every request against the ACLs, denying what none allows [default: false: everything
    /// is allowed, and the ACL requests answer SECURITY_DISABLED].
    #[arg(long, env = "ONCE_AUTHORIZATION", value_name = "BOOL")]
    authorization: Option<bool>,
    /// Principals allowed everything when --authorization is on: User:NAME[,User:NAME…]
    /// (separate with ';' instead when a name holds a comma, e.g. a certificate's subject);
    /// repeatable.
    #[arg(long, env = "ONCE_SUPER_USERS", value_name = "PRINCIPALS")]
    #[serde(default, deserialize_with = "one_or_many")]
    super_users: Vec<String>,
    /// Directory for topics and logs [default: ./once-data].
    #[arg(long, env = "ONCE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Broker id reported in Metadata [default: 0].
    #[arg(long, env = "ONCE_NODE_ID")]
    node_id: Option<i32>,
    /// Create topics on first use in Metadata [default: true].
    #[arg(long, env = "ONCE_AUTO_CREATE_TOPICS")]
    auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics [default: 1].
    #[arg(long, env = "ONCE_DEFAULT_PARTITIONS")]
    default_partitions: Option<i32>,
    /// Default retention.ms of topics; -1 keeps forever [default: 604800000].
    #[arg(long, env = "ONCE_RETENTION_MS", allow_hyphen_values = true)]
    retention_ms: Option<i64>,
    /// Default retention.bytes of topics; -1 is unlimited [default: -1].
    #[arg(long, env = "ONCE_RETENTION_BYTES", allow_hyphen_values = true)]
    retention_bytes: Option<i64>,
    /// Default segment.bytes of topics [default: 1073741824].
    #[arg(long, env = "ONCE_SEGMENT_BYTES")]
    segment_bytes: Option<i64>,
    /// Default segment.ms of topics [default: 604800000].
    #[arg(long, env = "ONCE_SEGMENT_MS")]
    segment_ms: Option<i64>,
    /// Default max.message.bytes of topics [default: 1048588].
    #[arg(long, env = "ONCE_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<i64>,
    /// How often segments past retention are deleted, in ms [default: 300000].
    #[arg(long, env = "ONCE_RETENTION_CHECK_INTERVAL_MS")]
    retention_check_interval_ms: Option<u64>,
    /// Forget a producer id after this long without a batch, in ms [default: 86400000].
    #[arg(long, env = "ONCE_PRODUCER_ID_EXPIRATION_MS")]
    producer_id_expiration_ms: Option<i64>,
    /// Largest transaction.timeout.ms a producer may ask for, in ms [default: 900000].
    #[arg(long, env = "ONCE_TRANSACTION_MAX_TIMEOUT_MS")]
    transaction_max_timeout_ms: Option<i32>,
    /// How often timed-out transactions are aborted, in ms [default: 10000].
    #[arg(long, env = "ONCE_TRANSACTION_ABORT_CHECK_INTERVAL_MS")]
    transaction_abort_check_interval_ms: Option<u64>,
    /// Forget a transactional id after this long without a transaction, in ms [default: 604800000].
    #[arg(long, env = "ONCE_TRANSACTIONAL_ID_EXPIRATION_MS")]
    transactional_id_expiration_ms: Option<i64>,
    /// Most open client connections [default: 1024].
    #[arg(long, env = "ONCE_CONNECTIONS_MAX")]
    connections_max: Option<usize>,
    /// Close a connection that sends no request, or takes no byte of a waiting response, for this
    /// long, in ms [default: 600000].
    #[arg(long, env = "ONCE_CONNECTIONS_MAX_IDLE_MS")]
    connections_max_idle_ms: Option<u64>,
    /// Largest request accepted, in bytes [default: 104857600].
    #[arg(long, env = "ONCE_REQUEST_BYTES_MAX")]
    request_bytes_max: Option<usize>,
    /// Bytes of requests being handled at once, across all connections [default: 536870912].
    #[arg(long, env = "ONCE_QUEUED_REQUEST_BYTES_MAX")]
    queued_request_bytes_max: Option<usize>,
    /// UNSAFE, benchmarks only: acknowledge writes without fsync; a crash or power loss loses them.
    #[arg(long, env = "ONCE_UNSAFE_SKIP_FSYNC")]
    unsafe_skip_fsync: Option<bool>,
    /// Bytes of RAM each deduplicating topic's message-id index may hold; past it, sealed chunks
    /// of the index move to files in the topic's directory [default: 1073741824].
    #[arg(long, env = "ONCE_DEDUP_MEMORY_BYTES")]
    dedup_memory_bytes: Option<usize>,
    /// Serve the metrics alone (GET /metrics, OpenMetrics text) on [https://]HOST:PORT
    /// [default: off]; --http-listen serves them too. With --authorization, scraping needs
    /// DESCRIBE on the cluster.
    #[arg(long, env = "ONCE_METRICS_LISTEN", value_name = "[https://]HOST:PORT")]
    metrics_listen: Option<String>,
    /// Serve HTTP on HOST:PORT or http://HOST:PORT, HTTPS on https://HOST:PORT (with --tls-cert and
    /// --tls-key) [default: off]: REST Proxy v3 produce with Idempotency-Key
    /// (POST /v3/clusters/{cluster_id}/topics/{topic}/records), GET /v3/clusters, GET /metrics,
    /// GET /openapi.json; Basic authentication with the SASL users, the same ACLs
    /// (docs/design/http.md).
    #[arg(long, env = "ONCE_HTTP_LISTEN", value_name = "[https://]HOST:PORT")]
    http_listen: Option<String>,
    /// A directory of `once check --report NAME.html` pages the web console (GET / on
    /// --http-listen) lists and shows [default: none].
    #[arg(long, env = "ONCE_CONSOLE_REPORTS", value_name = "DIR")]
    console_reports: Option<PathBuf>,
    /// Free bytes to keep on the data directory's filesystem: below it, produce is refused with a
    /// retriable KAFKA_STORAGE_ERROR (HTTP 507) while offsets, transactions and retention go on, and
    /// resumes by itself when space is freed; 0 turns the floor off [default: 1 GiB or 5 % of the
    /// filesystem, whichever is smaller].
    #[arg(long, env = "ONCE_MIN_FREE_BYTES", value_name = "BYTES")]
    min_free_bytes: Option<u64>,
    /// Bytes made durable in a partition's active segment after which its recovery checkpoint is
    /// rewritten (checked every second): a start after a crash checks batch by batch only what
    /// follows the checkpoint, not the whole active segment [default: 16777216].
    #[arg(long, env = "ONCE_RECOVERY_CHECKPOINT_BYTES", value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    recovery_checkpoint_bytes: Option<u64>,
    /// Zeros written ahead of each partition's active segment, this many bytes at a time at most,
    /// while its syncs are small (under 32 KiB each on average): appends then overwrite blocks the file
    /// already has, and their fdatasyncs journal no new file size. 0 turns it off. None are written
    /// on copy-on-write file systems (btrfs, ZFS, bcachefs: an overwrite allocates anyway) or in
    /// memory (tmpfs, ramfs), whatever this says, as the data directory's own file system reports
    /// it (overlayfs counts as one where they pay, whatever lies under it). The internal offsets and
    /// transaction logs write them in 256 KiB steps whatever this says (not on those file systems
    /// either) [default: 262144].
    #[arg(long, env = "ONCE_LOG_ZERO_AHEAD_BYTES", value_name = "BYTES")]
    log_zero_ahead_bytes: Option<u64>,
    /// Log filter (tracing EnvFilter syntax) [default: info].
    #[arg(long, env = "ONCE_LOG")]
    log: Option<String>,
}

/// The principals of `--super-users` values: each a list separated by ';' when it holds one, else
/// by ',' (Kafka's super.users uses ';', which a certificate subject's commas need).
fn super_users(values: &[String]) -> anyhow::Result<Vec<once_acl::Principal>> {
    let mut principals = Vec::new();
    for value in values {
        let separator = if value.contains(';') { ';' } else { ',' };
        for text in value.split(separator).map(str::trim).filter(|text| !text.is_empty()) {
            let principal: once_acl::Principal =
                text.parse().map_err(|error| anyhow::anyhow!("--super-users: {error} (expected User:NAME)"))?;
            anyhow::ensure!(principal.kind() == "User", "--super-users: '{text}' is not a User: principal");
            anyhow::ensure!(!principal.is_wildcard(), "--super-users: User:* would make everyone a super user");
            principals.push(principal);
        }
    }
    Ok(principals)
}

/// A config-file value that may be one string or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

macro_rules! merge {
    ($flags:ident, $file:ident, $($field:ident),*) => {
        $( if $flags.$field.is_none() { $flags.$field = $file.$field.take(); } )*
    };
}

impl ServeArgs {
    /// Fills options not given by flag or environment from the config file.
    fn merge_file(mut self) -> anyhow::Result<ServeArgs> {
        let path = match &self.config {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from("once.toml")).filter(|path| path.exists()),
        };
        let Some(path) = path else { return Ok(self) };
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut file: ServeArgs = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        for (flags, from_file) in [
            (&mut self.advertised_listener, &mut file.advertised_listener),
            (&mut self.listener, &mut file.listener),
            (&mut self.scram_user, &mut file.scram_user),
            (&mut self.super_users, &mut file.super_users),
        ] {
            if flags.is_empty() {
                *flags = std::mem::take(from_file);
            }
        }
        merge!(
            self,
            file,
            listen,
            tls_cert,
            tls_key,
            tls_client_ca,
            authorization,
            data_dir,
            node_id,
            auto_create_topics,
            default_partitions,
            retention_ms,
            retention_bytes,
            segment_bytes,
            segment_ms,
            max_message_bytes,
            retention_check_interval_ms,
            producer_id_expiration_ms,
            transaction_max_timeout_ms,
            transaction_abort_check_interval_ms,
            transactional_id_expiration_ms,
            connections_max,
            connections_max_idle_ms,
            request_bytes_max,
            queued_request_bytes_max,
            unsafe_skip_fsync,
            dedup_memory_bytes,
            metrics_listen,
            http_listen,
            console_reports,
            min_free_bytes,
            recovery_checkpoint_bytes,
            log_zero_ahead_bytes,
            log
        );
        Ok(self)
    }

    fn broker_config(&self) -> anyhow::Result<NodeConfig> {
        let defaults = NodeConfig::default();
        let topic = TopicDefaults::default();
        anyhow::ensure!(
            self.listener.is_empty() || self.listen.is_none(),
            "--listen and --listener both given: name the plaintext one as --listener PLAINTEXT://HOST:PORT"
        );
        let listeners = self
            .listener
            .iter()
            .map(|text| {
                once_node::listeners::ListenerSpec::parse(text).map_err(|error| anyhow::anyhow!("--listener {error}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(once_node::config::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            (None, None) if self.tls_client_ca.is_none() => None,
            _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)"),
        };
        let scram_users = self
            .scram_user
            .iter()
            .map(|text| match text.split_once(':') {
                Some((name, password)) if !name.is_empty() && !password.is_empty() => {
                    Ok((name.to_string(), password.to_string()))
                }
                _ => Err(anyhow::anyhow!("--scram-user expects NAME:PASSWORD")),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // A bare HOST:PORT is the first listener's advertised address, as before listeners existed.
        let (bare, named): (Vec<String>, Vec<String>) =
            self.advertised_listener.iter().cloned().partition(|text| !text.contains("://"));
        anyhow::ensure!(bare.len() <= 1, "only one --advertised-listener may be a bare HOST:PORT");
        let super_users = super_users(&self.super_users)?;
        let authorization = self.authorization.unwrap_or(false);
        if !authorization && !super_users.is_empty() {
            tracing::warn!("--super-users has no effect without --authorization true");
        }
        Ok(NodeConfig {
            authorization,
            super_users,
            http_users: self.http_listen.is_some() || self.metrics_listen.is_some(),
            listen: self.listen.clone().unwrap_or(defaults.listen),
            advertised_listener: bare.into_iter().next(),
            advertised_listeners: named,
            listeners,
            tls,
            scram_users,
            data_dir: self.data_dir.clone().unwrap_or(defaults.data_dir),
            node_id: self.node_id.unwrap_or(defaults.node_id),
            auto_create_topics: self.auto_create_topics.unwrap_or(defaults.auto_create_topics),
            default_partitions: self.default_partitions.unwrap_or(defaults.default_partitions),
            topic_defaults: TopicDefaults {
                retention_ms: self.retention_ms.unwrap_or(topic.retention_ms),
                retention_bytes: self.retention_bytes.unwrap_or(topic.retention_bytes),
                segment_bytes: self.segment_bytes.unwrap_or(topic.segment_bytes),
                segment_ms: self.segment_ms.unwrap_or(topic.segment_ms),
                max_message_bytes: self.max_message_bytes.unwrap_or(topic.max_message_bytes),
                unsafe_skip_fsync: self.unsafe_skip_fsync.unwrap_or(false),
                dedup_memory_bytes: self.dedup_memory_bytes.unwrap_or(topic.dedup_memory_bytes),
                log_zero_ahead_bytes: self.log_zero_ahead_bytes.unwrap_or(topic.log_zero_ahead_bytes),
            },
            connections_max: self.connections_max.unwrap_or(defaults.connections_max),
            connections_max_idle_ms: self.connections_max_idle_ms.unwrap_or(defaults.connections_max_idle_ms),
            request_bytes_max: self.request_bytes_max.unwrap_or(defaults.request_bytes_max),
            queued_request_bytes_max: self.queued_request_bytes_max.unwrap_or(defaults.queued_request_bytes_max),
            retention_check_interval_ms: self
                .retention_check_interval_ms
                .unwrap_or(defaults.retention_check_interval_ms),
            fetch_bytes_max: defaults.fetch_bytes_max,
            producer_id_expiration_ms: self.producer_id_expiration_ms.unwrap_or(defaults.producer_id_expiration_ms),
            transaction_max_timeout_ms: self.transaction_max_timeout_ms.unwrap_or(defaults.transaction_max_timeout_ms),
            transaction_abort_check_interval_ms: self
                .transaction_abort_check_interval_ms
                .unwrap_or(defaults.transaction_abort_check_interval_ms),
            transactional_id_expiration_ms: self
                .transactional_id_expiration_ms
                .unwrap_or(defaults.transactional_id_expiration_ms),
            // Only tests set it; it is deliberately not a flag or a config-file key.
            // Ignored by a build without the `test-hooks` feature (see `warn_if_test_hooks_missing`).
            test_crash_point: std::env::var(CRASH_POINT_ENV).ok().filter(|point| !point.is_empty()),
            min_free_bytes: self.min_free_bytes,
            recovery_checkpoint_bytes: self.recovery_checkpoint_bytes.unwrap_or(defaults.recovery_checkpoint_bytes),
        })
    }
}

fn validate(config: &NodeConfig) -> anyhow::Result<()> {
    let defaults = &config.topic_defaults;
    for (name, value) in [
        ("retention.ms", defaults.retention_ms.to_string()),
        ("retention.bytes", defaults.retention_bytes.to_string()),
        ("segment.bytes", defaults.segment_bytes.to_string()),
        ("segment.ms", defaults.segment_ms.to_string()),
        ("max.message.bytes", defaults.max_message_bytes.to_string()),
    ] {
        once_node::topic_config::validate(name, &value).map_err(anyhow::Error::msg)?;
    }
    anyhow::ensure!(config.default_partitions >= 1, "default partitions must be at least 1");
    let zero_ahead = defaults.log_zero_ahead_bytes;
    anyhow::ensure!(
        zero_ahead == 0 || zero_ahead >= 4096,
        "log zero ahead bytes must be 0 (off) or at least 4096 (a page): {zero_ahead} would write zeros after nearly every append"
    );
    anyhow::ensure!(config.connections_max >= 1, "connections max must be at least 1");
    anyhow::ensure!(config.connections_max_idle_ms >= 1, "connections max idle must be at least 1 ms");
    anyhow::ensure!(config.transaction_max_timeout_ms >= 1, "transaction max timeout must be at least 1 ms");
    anyhow::ensure!(
        config.transaction_abort_check_interval_ms >= 1,
        "transaction abort check interval must be at least 1 ms"
    );
    anyhow::ensure!(
        config.queued_request_bytes_max >= config.request_bytes_max,
        "queued request bytes max must be at least request bytes max, or a largest request could never be read"
    );
    anyhow::ensure!(
        config.queued_request_bytes_max <= u32::MAX as usize,
        "queued request bytes max must be below 4 GiB"
    );
    Ok(())
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let args = args.merge_file()?;
    let filter = args.log.clone().unwrap_or_else(|| "info".to_string());
    // A log line that cannot be written (a full disk under `2> once.log`) is dropped and counted,
    // never a panic: logging must not stop the broker.
    crate::logging::init(&filter).context("--log")?;
    warn_if_test_hooks_missing();
    let config = args.broker_config()?;
    validate(&config)?;
    let http_listen = http_address("--http-listen", &args.http_listen)?;
    let metrics_listen = http_address("--metrics-listen", &args.metrics_listen)?;
    if config.topic_defaults.unsafe_skip_fsync {
        tracing::warn!("UNSAFE: --unsafe-skip-fsync is on; acknowledged writes can be lost on a crash");
    }
    // One file per partition: the soft open-file limit (often 1,024) is raised to the hard one.
    match once_node::storage::raise_open_file_limit() {
        Ok((before, soft, hard)) => tracing::info!(
            soft,
            hard,
            raised_from = before,
            open_now = once_node::storage::open_files_now().unwrap_or(0),
            "open-file limit"
        ),
        Err(error) => tracing::warn!(%error, "cannot read or raise the open-file limit"),
    }
    if let Ok((soft, _)) = once_node::storage::open_file_limit() {
        if soft < 4096 {
            tracing::warn!(soft, "a low open-file limit: each partition's segments hold files open; raise the hard limit (ulimit -Hn) for many partitions");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        let broker = Node::open(config).context("opening the data directory")?;
        let server = Server::bind(broker.clone()).await.context("starting the listeners")?;
        let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
        let mut http = Vec::new();
        // --metrics-listen: GET /metrics alone (kept from before --http-listen, which serves it too).
        for (flag, address, metrics_only) in [("--http-listen", http_listen, false), ("--metrics-listen", metrics_listen, true)] {
            let Some(address) = address else { continue };
            let router = if metrics_only {
                once_http::metrics_router(broker.clone(), address.scheme)
            } else {
                once_http::router(broker.clone(), address.scheme, args.console_reports.clone())
            };
            let tls = match (address.scheme, &broker.config.tls) {
                (once_http::listen::Scheme::Http, _) => None,
                (once_http::listen::Scheme::Https, Some(files)) => Some(
                    once_http::listen::tls_acceptor(&files.cert, &files.key).map_err(|error| anyhow::anyhow!("{flag}: {error}"))?,
                ),
                (once_http::listen::Scheme::Https, None) => anyhow::bail!("{flag} https://… needs --tls-cert and --tls-key"),
            };
            let listener = tokio::net::TcpListener::bind(&address.address)
                .await
                .with_context(|| format!("binding {flag} {}", address.address))?;
            let local = listener.local_addr()?;
            tracing::info!(%flag, address = %local, https = tls.is_some(), "serving HTTP");
            if tls.is_none() && !once_http::listen::is_loopback(local.ip()) {
                tracing::warn!(%flag, address = %local, "plain HTTP beyond loopback: Basic credentials from other hosts are refused (they would cross the network in clear); use https://");
            }
            // Bound to loopback: only requests naming this host (no DNS rebinding into the console).
            let router = if once_http::listen::is_loopback(local.ip()) {
                once_http::listen::loopback_hosts_only(router)
            } else {
                router
            };
            let mut stopped = http_stopped.clone();
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            http.push(tokio::spawn(once_http::serve(listener, tls, router, shutdown)));
        }
        tracing::info!(min_free_bytes = broker.floor.floor(), "free-space floor: produce is refused below it");
        if let Some(file_system) = once_log::zeros_ahead_unsuited(&broker.config.data_dir) {
            tracing::info!(file_system, "no zeros written ahead of the logs' appends: the data directory's file system copies on write or keeps files in memory, where they do not pay");
        }
        for (listener, address) in server.local_addrs() {
            let advertised = format!("{}:{}", listener.advertised.host, listener.advertised.port);
            tracing::info!(listener = %listener.name, protocol = listener.protocol.name(), address = %address?, %advertised, "listening");
        }
        tracing::info!(listen = %server.local_addr()?, advertised = %format!("{}:{}", broker.endpoint.host, broker.endpoint.port), data_dir = %broker.config.data_dir.display(), "once is serving");
        if once_log::power_loss::enabled() {
            tokio::spawn(power_loss_on_sigusr2());
        }
        // On SIGTERM the HTTP edge stops first and answers the requests it holds (every one after
        // its fsync), then the Kafka edge drains and the node closes.
        server
            .run(async move {
                shutdown_signal().await;
                let _ = stop_http.send(true);
                for http in http {
                    match tokio::time::timeout(std::time::Duration::from_secs(10), http).await {
                        Ok(Ok(Ok(()))) => {}
                        Ok(Ok(Err(error))) => tracing::warn!(%error, "HTTP server"),
                        Ok(Err(error)) => tracing::warn!(%error, "HTTP server task"),
                        Err(_) => tracing::warn!("HTTP requests still in progress after 10 s; closing"),
                    }
                }
            })
            .await;
        anyhow::Ok(())
    })
}

/// A `--http-listen`/`--metrics-listen` value: `[http://|https://]HOST:PORT`.
fn http_address(flag: &str, text: &Option<String>) -> anyhow::Result<Option<once_http::listen::ListenAddress>> {
    text.as_deref()
        .map(|text| once_http::listen::ListenAddress::parse(text).map_err(|error| anyhow::anyhow!("{flag} {error}")))
        .transpose()
}

/// The environment variable naming the transaction coordinator's test crash point.
const CRASH_POINT_ENV: &str = "ONCE_TEST_CRASH_POINT";

/// A test hook's environment variable does nothing in a binary built without the `test-hooks`
/// feature (a plain `cargo build --release`): say so at start-up, or a power-loss check or a
/// crash-point test would silently test nothing.
fn warn_if_test_hooks_missing() {
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    for (name, compiled) in [
        (once_log::power_loss::MANIFEST_ENV, once_log::power_loss::COMPILED),
        (CRASH_POINT_ENV, once_txn::CRASH_POINTS_COMPILED),
    ] {
        if set(name) && !compiled {
            tracing::warn!(
                "{name} is set but this binary was built without test hooks, so it is ignored; build with \
                 `cargo build --release -p once-cli --features test-hooks` to use it"
            );
        }
    }
}

/// Test hook (`ONCE_TEST_POWER_LOSS_MANIFEST`, only with the `test-hooks` feature; without it
/// `enabled()` is false and this is never spawned): SIGUSR2 simulates power loss — unsynced appends are
/// recorded as lost and the process dies by SIGKILL (see once_log::power_loss).
async fn power_loss_on_sigusr2() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::user_defined2()) {
        Ok(mut power_loss) => {
            tracing::warn!("test hook: SIGUSR2 simulates power loss");
            power_loss.recv().await;
            tracing::error!("test hook: simulating power loss now");
            tokio::task::spawn_blocking(once_log::power_loss::trigger).await.ok();
        }
        Err(error) => tracing::error!(%error, "cannot listen for SIGUSR2"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("once.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:7000\"\ndata_dir = \"/srv/once\"\nretention_ms = -1\ndefault_partitions = 6\n\
             connections_max_idle_ms = 15000\nlog_zero_ahead_bytes = 0\n",
        )
        .expect("write");
        let file_arg = file.to_str().expect("utf-8 path");
        let parsed =
            Wrapper::try_parse_from(["once", "--config", file_arg, "--listen", "127.0.0.1:8000"]).expect("parses");
        let config = parsed.serve.merge_file().expect("merges").broker_config().expect("a config");
        assert_eq!(config.listen, "127.0.0.1:8000", "the flag wins");
        assert_eq!(config.data_dir, PathBuf::from("/srv/once"), "the file fills what flags leave out");
        assert_eq!(config.default_partitions, 6);
        assert_eq!(config.connections_max_idle_ms, 15_000);
        assert_eq!(config.topic_defaults.retention_ms, -1);
        assert_eq!(config.advertised_listener, None, "defaults to the listen address");
        assert!(!config.topic_defaults.unsafe_skip_fsync, "durable by default");
        assert_eq!(config.topic_defaults.log_zero_ahead_bytes, 0, "zeros ahead turned off in the file");
        let flagged = Wrapper::try_parse_from(["once", "--log-zero-ahead-bytes", "65536"]).expect("parses");
        let flagged = flagged.serve.broker_config().expect("a config");
        assert_eq!(flagged.topic_defaults.log_zero_ahead_bytes, 65_536, "by flag");
        let default = Wrapper::try_parse_from(["once"]).expect("parses").serve.broker_config().expect("a config");
        assert_eq!(default.topic_defaults.log_zero_ahead_bytes, 256 << 10, "256 KiB by default");
    }

    #[test]
    fn a_connection_idle_time_of_zero_is_refused() {
        let parsed = Wrapper::try_parse_from(["once", "--connections-max-idle-ms", "0"]).expect("parses");
        let config = parsed.serve.broker_config().expect("a config");
        let refused = validate(&config).expect_err("0 ms would close every connection between two reads");
        assert!(refused.to_string().contains("connections max idle"), "{refused}");
        assert_eq!(NodeConfig::default().connections_max_idle_ms, 600_000, "Kafka's default, 10 minutes");
    }

    #[test]
    fn zeros_ahead_are_off_or_at_least_a_page() {
        for (bytes, valid) in [("0", true), ("4095", false), ("4096", true), ("1048576", true), ("1", false)] {
            let parsed = Wrapper::try_parse_from(["once", "--log-zero-ahead-bytes", bytes]).expect("parses");
            let config = parsed.serve.broker_config().expect("a config");
            assert_eq!(validate(&config).is_ok(), valid, "--log-zero-ahead-bytes {bytes}");
        }
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("once.toml");
        std::fs::write(&file, "listne = \"typo\"\n").expect("write");
        let parsed = Wrapper::try_parse_from(["once", "--config", file.to_str().expect("utf-8 path")]).expect("parses");
        assert!(parsed.serve.merge_file().is_err(), "a misspelt key is an error, not ignored");
    }
}
