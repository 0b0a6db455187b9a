//! The topic registry: which topics exist, their ids, partitions and configs, persisted under the data
//! directory.
//!
//! On disk: `<data>/topics/<name>/topic.json` (name, id, partition count, config overrides), written
//! atomically (temp file, fsync, rename, fsync dir), beside `<data>/topics/<name>/<partition>/` log
//! directories. A topic exists exactly when its `topic.json` does: creation writes it last, deletion
//! removes it first, and opening removes directories without one (left by a crash mid-way). A topic
//! that deduplicates keeps its message-id index's snapshot beside them, `dedup.snapshot`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use once_dedup::DEDUP_SOURCE_CONFIG;
use once_partition::{Partition, PartitionError, PartitionId, TopicDedup};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::topic_config::{self, TopicConfig, TopicDefaults};

const TOPIC_FILE: &str = "topic.json";
/// The snapshot of a deduplicating topic's message-id index, in the topic's directory.
const DEDUP_SNAPSHOT_FILE: &str = "dedup.snapshot";
/// Kafka's limit on topic name length.
const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Partitions refused for the open-file limit are logged every few seconds at most.
static OPEN_FILES_REFUSALS: crate::storage::EveryFewSeconds = crate::storage::EveryFewSeconds::new();

/// A bound on partitions per topic, so one request cannot open unbounded files.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic '{0}' appears more than once in the request")]
    DuplicateInRequest(String),
    #[error("topic '{0}' already exists")]
    AlreadyExists(String),
    #[error("topic '{0}' does not exist")]
    Unknown(String),
    #[error("invalid topic name: {0}")]
    InvalidName(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("replication factor {0} is impossible on a single broker (use 1 or -1)")]
    InvalidReplicationFactor(i16),
    /// More partitions than the open-file limit allows (one descriptor each).
    #[error("{0}")]
    TooManyPartitions(String),
    #[error("topic metadata I/O error at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Partition(#[from] PartitionError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TopicError + '_ {
    move |source| TopicError::Io { path: path.to_path_buf(), source }
}

#[derive(Serialize, Deserialize)]
struct TopicFile {
    name: String,
    id: Uuid,
    partitions: i32,
    configs: BTreeMap<String, String>,
}

/// One topic.
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    config: RwLock<TopicConfig>,
    partitions: RwLock<Vec<Arc<Partition>>>,
    /// The message-id index shared by the partitions, if `dedup.source` is not `none`.
    dedup: Option<Arc<TopicDedup>>,
    /// Bytes and records in and out since start (for metrics).
    pub traffic: TopicTraffic,
}

/// A topic's traffic since start: produced batches acknowledged (or durable, acks=0), fetched bytes.
#[derive(Default, Debug)]
pub struct TopicTraffic {
    pub produced_bytes: std::sync::atomic::AtomicU64,
    pub produced_records: std::sync::atomic::AtomicU64,
    pub fetched_bytes: std::sync::atomic::AtomicU64,
}

impl TopicTraffic {
    /// One produced batch of `bytes` holding `records`, stored.
    pub fn produced(&self, bytes: usize, records: u32) {
        use std::sync::atomic::Ordering::Relaxed;
        self.produced_bytes.fetch_add(bytes as u64, Relaxed);
        self.produced_records.fetch_add(u64::from(records), Relaxed);
    }

    /// `bytes` of record batches answered to a Fetch.
    pub fn fetched(&self, bytes: usize) {
        self.fetched_bytes.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Topic {
    pub fn config(&self) -> TopicConfig {
        self.config.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        let partitions = self.partitions.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        usize::try_from(index).ok().and_then(|index| partitions.get(index).cloned())
    }

    pub fn partition_count(&self) -> i32 {
        self.partitions.read().unwrap_or_else(|poisoned| poisoned.into_inner()).len() as i32
    }

    /// The topic's message-id index, if it deduplicates.
    pub fn dedup(&self) -> Option<&Arc<TopicDedup>> {
        self.dedup.as_ref()
    }
}

/// Checks a topic name the way Kafka does.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |reason: &str| Err(TopicError::InvalidName(format!("'{name}' {reason}")));
    if name.is_empty() {
        return invalid("is empty");
    }
    if name == "." || name == ".." {
        return invalid("is not allowed");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return invalid("is longer than 249 characters");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-') {
        return invalid("may contain only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// The names Kafka reserves for its internal topics: the group and transaction coordinators' logs,
/// the share-group state, and KRaft's metadata log. Other names starting with `__` are ordinary
/// topics to Kafka and to Once (Debezium's `__debezium-heartbeat.<prefix>`, Strimzi's `__strimzi...`).
pub const INTERNAL_TOPICS: [&str; 4] =
    ["__consumer_offsets", "__transaction_state", "__share_group_state", "__cluster_metadata"];

/// Checks the name of a topic about to be created: a valid name that is not one of Kafka's internal
/// topics ([`INTERNAL_TOPICS`]). Once keeps group offsets and transactions in its own logs, not as
/// topics, so a topic of such a name would be an empty impostor that tools read as the real thing.
/// Only creation is refused: a topic of such a name already on disk (created by an older Once) still
/// loads and is served.
pub fn validate_new_topic_name(name: &str) -> Result<(), TopicError> {
    validate_topic_name(name)?;
    if INTERNAL_TOPICS.contains(&name) {
        return Err(TopicError::InvalidName(format!(
            "'{name}' is one of Kafka's internal topics, which Once does not serve: it keeps group offsets \
             and transactions in its own logs"
        )));
    }
    Ok(())
}

/// All topics of the broker.
pub struct TopicRegistry {
    dir: PathBuf,
    defaults: TopicDefaults,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes create, delete, add-partitions and config changes (each rewrites topic.json).
    admin: tokio::sync::Mutex<()>,
    /// Descriptors topic creation leaves free (`storage::file_reserve`).
    file_reserve: std::sync::atomic::AtomicU64,
}

impl TopicRegistry {
    /// Opens every topic under `<data_dir>/topics`, recovering each partition log. Needs a tokio runtime.
    pub fn open(data_dir: &Path, defaults: TopicDefaults) -> Result<TopicRegistry, TopicError> {
        let dir = data_dir.join("topics");
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let mut topics = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let topic_dir = entry.path();
            if !topic_dir.is_dir() {
                continue;
            }
            match load_topic(&topic_dir, &defaults)? {
                Some(topic) => {
                    topics.insert(topic.name.clone(), Arc::new(topic));
                }
                None => {
                    tracing::warn!(dir = %topic_dir.display(), "removing topic directory without topic.json (interrupted create or delete)");
                    fs::remove_dir_all(&topic_dir).map_err(io_error(&topic_dir))?;
                }
            }
        }
        tracing::info!(topics = topics.len(), "topics loaded");
        Ok(TopicRegistry {
            dir,
            defaults,
            topics: RwLock::new(topics),
            admin: tokio::sync::Mutex::new(()),
            file_reserve: std::sync::atomic::AtomicU64::new(crate::storage::FILE_RESERVE),
        })
    }

    pub fn defaults(&self) -> &TopicDefaults {
        &self.defaults
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|poisoned| poisoned.into_inner()).values().cloned().collect()
    }

    /// Validates a creation without doing it.
    pub fn check_create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        // Existence first: "create if absent" callers (Connect's TopicAdmin) expect TOPIC_ALREADY_EXISTS
        // for a topic that exists, even one whose name can no longer be created.
        if self.get(name).is_some() {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        validate_new_topic_name(name)?;
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(format!(
                "partition count {partitions} must be between 1 and {PARTITIONS_PER_TOPIC_MAX}"
            )));
        }
        if replication_factor != 1 && replication_factor != -1 {
            return Err(TopicError::InvalidReplicationFactor(replication_factor));
        }
        self.check_open_files(partitions)?;
        for (key, value) in configs {
            topic_config::validate(key, value).map_err(TopicError::InvalidConfig)?;
        }
        Ok(())
    }

    /// Partitions of every topic.
    pub fn partitions_open(&self) -> u64 {
        self.list().iter().map(|topic| topic.partition_count() as u64).sum()
    }

    /// Sets the descriptors topic creation leaves free (connections and the rest).
    pub fn set_file_reserve(&self, reserve: u64) {
        self.file_reserve.store(reserve, std::sync::atomic::Ordering::Relaxed);
    }

    /// Refuses `more` partitions when the descriptors open now, one for each new partition and the
    /// reserve would pass the soft open-file limit, before any is opened (a creation that ran out of
    /// descriptors half-way would fail with a storage error). Each partition's later segments need
    /// more: the reserve is the room for them.
    fn check_open_files(&self, more: i32) -> Result<(), TopicError> {
        let (soft, hard) = crate::storage::open_file_limit().unwrap_or((u64::MAX, u64::MAX));
        let open = crate::storage::open_files_now().unwrap_or_else(|| self.partitions_open());
        let reserve = self.file_reserve.load(std::sync::atomic::Ordering::Relaxed);
        let needed = open.saturating_add(more as u64).saturating_add(reserve);
        if needed <= soft {
            return Ok(());
        }
        let message = format!(
            "{more} more partitions would need {needed} open files with {open} open now (segments, dedup chunks, \
             connections) and {reserve} kept free (--connections-max and the rest); the open-file limit (soft \
             {soft}, hard {hard}) is too low: raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) and \
             restart the broker"
        );
        // A topic auto-created by Metadata gets only an error code, which clients do not print.
        if let Some(suppressed) = OPEN_FILES_REFUSALS.due() {
            tracing::warn!(%message, suppressed, "refusing partitions: open-file limit");
        }
        Err(TopicError::TooManyPartitions(message))
    }

    pub async fn create(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        let _admin = self.admin.lock().await;
        self.check_create(name, partitions, -1, &configs)?;
        let topic_dir = self.dir.join(name);
        fs::create_dir_all(&topic_dir).map_err(io_error(&topic_dir))?;
        sync_dir(&self.dir)?;
        // A leftover of a deletion that failed half-way must not seed the new topic's index.
        let stale = topic_dir.join(DEDUP_SNAPSHOT_FILE);
        if stale.exists() {
            fs::remove_file(&stale).map_err(io_error(&stale))?;
        }
        let file = TopicFile { name: name.to_string(), id: Uuid::new_v4(), partitions, configs };
        let topic = open_topic(&topic_dir, &file, &self.defaults)?;
        write_topic_file(&topic_dir, &file)?;
        let topic = Arc::new(topic);
        self.topics.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, partitions, "topic created");
        Ok(topic)
    }

    pub async fn delete(&self, name: &str) -> Result<Uuid, TopicError> {
        let _admin = self.admin.lock().await;
        let topic = self.get(name).ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let topic_dir = self.dir.join(name);
        let file = topic_dir.join(TOPIC_FILE);
        fs::remove_file(&file).map_err(io_error(&file))?;
        sync_dir(&topic_dir)?;
        if let Some(dedup) = topic.dedup() {
            // Waits for a snapshot being written; none is written into the directory after this.
            dedup.close();
        }
        self.topics.write().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(name);
        for partition in topic.partitions() {
            if let Err(error) = partition.delete().await {
                tracing::warn!(topic = name, %error, "deleting partition files");
            }
        }
        fs::remove_dir_all(&topic_dir).map_err(io_error(&topic_dir))?;
        sync_dir(&self.dir)?;
        tracing::info!(topic = name, "topic deleted");
        Ok(topic.id)
    }

    pub fn check_add_partitions(&self, name: &str, count: i32) -> Result<Arc<Topic>, TopicError> {
        let topic = self.get(name).ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let current = topic.partition_count();
        if count <= current {
            return Err(TopicError::InvalidPartitions(format!(
                "topic '{name}' has {current} partitions; the new count {count} must be larger"
            )));
        }
        if count > PARTITIONS_PER_TOPIC_MAX {
            return Err(TopicError::InvalidPartitions(format!(
                "partition count {count} exceeds {PARTITIONS_PER_TOPIC_MAX}"
            )));
        }
        self.check_open_files(count - current)?;
        Ok(topic)
    }

    pub async fn add_partitions(&self, name: &str, count: i32) -> Result<(), TopicError> {
        let _admin = self.admin.lock().await;
        let topic = self.check_add_partitions(name, count)?;
        let topic_dir = self.dir.join(name);
        let config = topic.config();
        let mut partitions = topic.partitions();
        let mut added = Vec::new();
        for index in partitions.len() as i32..count {
            added.push(Arc::new(open_partition(&topic_dir, name, index, &config, topic.dedup.clone())?));
        }
        if let Some(dedup) = topic.dedup() {
            // On the blocking pool: the rebuild waits for a snapshot write or disk step in progress.
            let (dedup, replayed) = (dedup.clone(), added.clone());
            let rebuilt = tokio::task::spawn_blocking(move || dedup.rebuild(&replayed)).await;
            rebuilt.unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))?;
        }
        partitions.extend(added);
        let file =
            TopicFile { name: name.to_string(), id: topic.id, partitions: count, configs: config.overrides.clone() };
        write_topic_file(&topic_dir, &file)?;
        *topic.partitions.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = partitions;
        tracing::info!(topic = name, count, "partitions added");
        Ok(())
    }

    /// Changes a topic's overrides: `change` computes the new overrides from the current config under
    /// the admin lock, so concurrent changes compose instead of overwriting each other. With
    /// `validate_only` nothing is written.
    pub async fn update_config<F>(&self, name: &str, validate_only: bool, change: F) -> Result<(), TopicError>
    where
        F: FnOnce(&TopicConfig) -> Result<BTreeMap<String, String>, TopicError>,
    {
        let _admin = self.admin.lock().await;
        let topic = self.get(name).ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let current = topic.config();
        let overrides = change(&current)?;
        let changed = TopicConfig::new(overrides.clone(), self.defaults.clone());
        if changed.dedup_source() != current.dedup_source() {
            // Which records are stored depends on the source; changing it would leave an index that
            // does not describe the log (and a new source has no ids for the records already stored).
            return Err(TopicError::InvalidConfig(format!(
                "{DEDUP_SOURCE_CONFIG} of topic '{name}' is '{}' and cannot change on an existing topic; create a \
                 new topic with the source wanted",
                current.dedup_source()
            )));
        }
        if validate_only {
            return Ok(());
        }
        let topic_dir = self.dir.join(name);
        let file = TopicFile {
            name: name.to_string(),
            id: topic.id,
            partitions: topic.partition_count(),
            configs: overrides.clone(),
        };
        write_topic_file(&topic_dir, &file)?;
        let config = TopicConfig::new(overrides, self.defaults.clone());
        for partition in topic.partitions() {
            partition.set_config(config.log_config());
        }
        if let Some(dedup) = topic.dedup() {
            dedup.set_window(config.dedup_window());
        }
        *topic.config.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }

    /// Closes every partition cleanly (shutdown), then snapshots each topic's message-id index, which
    /// then covers every record (the next start replays nothing).
    pub async fn close_all(&self) {
        for topic in self.list() {
            for partition in topic.partitions() {
                if let Err(error) = partition.close().await {
                    tracing::error!(partition = %partition.id(), %error, "clean close failed; next start recovers");
                }
            }
            if let Some(dedup) = topic.dedup().cloned() {
                let name = topic.name.clone();
                let written = tokio::task::spawn_blocking(move || dedup.snapshot()).await;
                match written {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(topic = %name, %error, "dedup snapshot failed; next start replays")
                    }
                    Err(error) => tracing::warn!(topic = %name, %error, "dedup snapshot task failed"),
                }
            }
        }
    }
}

fn open_partition(
    topic_dir: &Path,
    name: &str,
    index: i32,
    config: &TopicConfig,
    dedup: Option<Arc<TopicDedup>>,
) -> Result<Partition, TopicError> {
    let id = PartitionId { topic: name.to_string(), partition: index };
    Ok(Partition::open_with_dedup(id, &topic_dir.join(index.to_string()), config.log_config(), dedup)?)
}

/// Opens a topic's partitions and, if it deduplicates, its message-id index: the snapshot, then a
/// replay of every partition's log after it.
fn open_topic(topic_dir: &Path, file: &TopicFile, defaults: &TopicDefaults) -> Result<Topic, TopicError> {
    let config = TopicConfig::new(file.configs.clone(), defaults.clone());
    let source = config.dedup_source();
    let dedup = source.is_enabled().then(|| {
        let snapshot = topic_dir.join(DEDUP_SNAPSHOT_FILE);
        Arc::new(TopicDedup::open(&file.name, source, config.dedup_window(), snapshot, defaults.dedup_memory_bytes))
    });
    let partitions = (0..file.partitions)
        .map(|index| open_partition(topic_dir, &file.name, index, &config, dedup.clone()).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(dedup) = &dedup {
        dedup.rebuild(&partitions)?;
    }
    Ok(Topic {
        name: file.name.clone(),
        id: file.id,
        config: RwLock::new(config),
        partitions: RwLock::new(partitions),
        dedup,
        traffic: TopicTraffic::default(),
    })
}

fn load_topic(topic_dir: &Path, defaults: &TopicDefaults) -> Result<Option<Topic>, TopicError> {
    let path = topic_dir.join(TOPIC_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(&path)(error)),
    };
    let file: TopicFile = serde_json::from_str(&text).map_err(|error| TopicError::Io {
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
    })?;
    // Partition directories beyond the recorded count come from an add-partitions that did not finish.
    for entry in fs::read_dir(topic_dir).map_err(io_error(topic_dir))? {
        let entry = entry.map_err(io_error(topic_dir))?;
        let index: Option<i32> = entry.file_name().to_str().and_then(|name| name.parse().ok());
        if index.is_some_and(|index| index >= file.partitions) {
            fs::remove_dir_all(entry.path()).map_err(io_error(topic_dir))?;
        }
    }
    open_topic(topic_dir, &file, defaults).map(Some)
}

fn write_topic_file(topic_dir: &Path, file: &TopicFile) -> Result<(), TopicError> {
    let text = serde_json::to_vec_pretty(file).map_err(|error| TopicError::InvalidConfig(error.to_string()))?;
    write_atomically(&topic_dir.join(TOPIC_FILE), &text)
}

/// Writes `path` so that after a crash it holds either the old or the new contents, never a mix.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), TopicError> {
    let temp = path.with_extension("tmp");
    let mut file = fs::File::create(&temp).map_err(io_error(&temp))?;
    file.write_all(contents).map_err(io_error(&temp))?;
    file.sync_all().map_err(io_error(&temp))?;
    fs::rename(&temp, path).map_err(io_error(path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<(), TopicError> {
    fs::File::open(dir).and_then(|handle| handle.sync_all()).map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        assert!(validate_topic_name("__consumer_offsets").is_ok(), "an existing topic's name is still valid");
    }

    #[test]
    fn internal_names_cannot_be_created() {
        for internal in INTERNAL_TOPICS {
            assert!(
                matches!(validate_new_topic_name(internal), Err(TopicError::InvalidName(_))),
                "{internal} must be refused"
            );
        }
        for ordinary in ["_x", "x__", "a__b", "__x", "__debezium-heartbeat.db1", "__strimzi_store_topic"] {
            assert!(validate_new_topic_name(ordinary).is_ok(), "{ordinary} is an ordinary name");
        }
    }
}
