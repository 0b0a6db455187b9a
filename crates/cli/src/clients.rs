//! `once produce` and `once consume`, on librdkafka.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

#[derive(Args)]
pub struct ProduceArgs {
    topic: String,
    /// Broker to talk to, HOST:PORT.
    #[arg(long, env = "ONCE_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[command(flatten)]
    client_settings: crate::client_settings::ClientSettingsArgs,
    /// Key of every record.
    #[arg(long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Header KEY=VALUE on every record (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Partition to write to (default: by key, or spread without one).
    #[arg(long)]
    partition: Option<i32>,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: String,
}

#[derive(Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Broker to talk to, HOST:PORT.
    #[arg(long, env = "ONCE_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[command(flatten)]
    client_settings: crate::client_settings::ClientSettingsArgs,
    /// Start at the first offset of each partition (default: the end).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset in each partition.
    #[arg(long)]
    offset: Option<i64>,
    /// Read only this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long)]
    follow: bool,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Print KEY<TAB>VALUE.
    #[arg(long)]
    print_key: bool,
    /// Print PARTITION<TAB>OFFSET<TAB> before each record.
    #[arg(long)]
    print_offset: bool,
}

/// A librdkafka config for `bootstrap` with the settings every librdkafka client `once` runs shares
/// (`once produce`, `once consume`, `once copy`, and the tests' clients): no re-bootstrap. From 2.10
/// on, librdkafka re-bootstraps by default (`metadata.recovery.strategy=rebootstrap`) when every broker it
/// knows is down, which for a one-broker cluster is any restart of Once; it then decommissions the
/// broker it knew and can wait forever for a coordinator (`send_offsets_to_transaction` hangs past its
/// timeout: librdkafka issues 5456 and 5511). docs/clients.md explains it for users.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap).set("metadata.recovery.strategy", "none");
    config
}

/// [`client_config`] with a command's `--command-config`/`-X` settings over it (before the
/// command's own settings, so what a command needs for its guarantees — acks, isolation level,
/// transactional id — stays the command's).
pub fn client_config_with(
    bootstrap: &str,
    settings: &crate::client_settings::ClientSettingsArgs,
) -> anyhow::Result<ClientConfig> {
    let mut config = client_config(bootstrap);
    crate::client_settings::ClientSettings::load(settings)?.apply_to(&mut config);
    Ok(config)
}

pub fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> =
        client_config_with(&args.bootstrap, &args.client_settings)?
            .set("acks", "all")
            .set("compression.type", &args.compression)
            .set("enable.idempotence", "false")
            .set("message.timeout.ms", "60000")
            .create()
            .context("creating the producer")?;
    let mut headers = OwnedHeaders::new();
    for pair in &args.headers {
        let (key, value) = pair.split_once('=').with_context(|| format!("header '{pair}' is not KEY=VALUE"))?;
        headers = headers.insert(Header { key, value: Some(value) });
    }
    let mut sent = 0u64;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading standard input")?;
        let (key, value) = match (&args.key, &args.key_separator) {
            (Some(key), _) => (Some(key.as_str()), line.as_str()),
            (None, Some(separator)) => match line.split_once(separator.as_str()) {
                Some((key, value)) => (Some(key), value),
                None => (None, line.as_str()),
            },
            (None, None) => (None, line.as_str()),
        };
        let mut record = BaseRecord::<str, str>::to(&args.topic).payload(value).headers(headers.clone());
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = args.partition {
            record = record.partition(partition);
        }
        let mut pending = record;
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    record,
                )) => {
                    producer.poll(Duration::from_millis(50));
                    pending = record;
                }
                Err((error, _)) => return Err(error).context("sending a record"),
            }
        }
        sent += 1;
    }
    producer.flush(Duration::from_secs(60)).context("waiting for acknowledgements")?;
    let undelivered = producer.in_flight_count();
    anyhow::ensure!(undelivered == 0, "{undelivered} records were not acknowledged");
    crate::report!("produced {sent} records");
    Ok(())
}

pub fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let consumer: BaseConsumer = client_config_with(&args.bootstrap, &args.client_settings)?
        .set("enable.auto.commit", "false")
        .set("group.id", "once-consume")
        .set("enable.partition.eof", "false")
        .set("allow.auto.create.topics", "false")
        .create()
        .context("creating the consumer")?;
    let metadata = consumer.fetch_metadata(Some(&args.topic), Duration::from_secs(30)).context("fetching metadata")?;
    let topic = metadata.topics().first().context("topic missing from metadata")?;
    if let Some(error) = topic.error() {
        anyhow::bail!("topic '{}': {:?}", args.topic, error);
    }
    let partitions: Vec<i32> = topic
        .partitions()
        .iter()
        .map(|partition| partition.id())
        .filter(|id| args.partition.is_none_or(|wanted| wanted == *id))
        .collect();
    anyhow::ensure!(!partitions.is_empty(), "no such partition");
    let start = match (args.from_beginning, args.offset) {
        (true, _) => Offset::Beginning,
        (false, Some(offset)) => Offset::Offset(offset),
        (false, None) => Offset::End,
    };
    let mut assignment = TopicPartitionList::new();
    let mut remaining = Vec::new();
    for &partition in &partitions {
        assignment.add_partition_offset(&args.topic, partition, start)?;
        let (low, high) = consumer.fetch_watermarks(&args.topic, partition, Duration::from_secs(30))?;
        let from = match start {
            Offset::Beginning => low,
            Offset::Offset(offset) => offset.max(low),
            _ => high,
        };
        remaining.push((partition, high, from >= high));
    }
    consumer.assign(&assignment)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut printed = 0u64;
    loop {
        if args.max_messages.is_some_and(|max| printed >= max) {
            break;
        }
        if !args.follow && remaining.iter().all(|(_, _, done)| *done) {
            break;
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message.context("consuming")?;
        if args.print_offset {
            write!(out, "{}\t{}\t", message.partition(), message.offset())?;
        }
        if args.print_key {
            out.write_all(message.key().unwrap_or_default())?;
            out.write_all(b"\t")?;
        }
        out.write_all(message.payload().unwrap_or_default())?;
        out.write_all(b"\n")?;
        printed += 1;
        if let Some(entry) = remaining.iter_mut().find(|(partition, _, _)| *partition == message.partition()) {
            entry.2 |= message.offset() + 1 >= entry.1;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_client_config_turns_re_bootstrap_off() {
        let config = super::client_config("127.0.0.1:9092");
        assert_eq!(config.get("metadata.recovery.strategy"), Some("none"), "librdkafka 5456/5511: docs/clients.md");
        assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:9092"));
    }
}
