//! `once sink --status`: where a sink stands, read from its database (the source of truth for
//! positions) and the broker (the end of each partition), sampled twice for a rate.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::batch::{Backend, DbError, PositionRow};

/// One partition of a sink.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionStatus {
    pub row: PositionRow,
    /// The partition's end (high watermark) as the broker reports it; `None` when unreachable.
    pub end: Option<i64>,
    /// How fast the position advanced between the two samples, offsets per second.
    pub per_second: f64,
}

impl PartitionStatus {
    /// Offsets not yet applied, when the end is known (a transaction's commit marker counts one).
    pub fn lag(&self) -> Option<i64> {
        self.end.map(|end| (end - self.row.next_offset).max(0))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Reads `sink`'s positions, waits `sample`, reads them again and asks the broker of `config` (if
/// any) for each partition's end.
pub fn status(
    backend: &mut (impl Backend + ?Sized),
    sink: &str,
    config: Option<&ClientConfig>,
    sample: Duration,
) -> Result<Vec<PartitionStatus>, StatusError> {
    let started = Instant::now();
    let first = backend.positions(sink)?;
    std::thread::sleep(sample);
    let rows = backend.positions(sink)?;
    let seconds = started.elapsed().as_secs_f64().max(f64::EPSILON);
    let consumer: Option<BaseConsumer> = match config {
        None => None,
        Some(config) => Some(config.clone().set("isolation.level", "read_committed").create()?),
    };
    let mut partitions = Vec::with_capacity(rows.len());
    for row in rows {
        let before = first
            .iter()
            .find(|old| old.topic == row.topic && old.partition == row.partition)
            .map_or(row.next_offset, |old| old.next_offset);
        // A sink never moves a position back; an operator may (to replay): no rate then.
        let end = consumer.as_ref().and_then(|consumer| {
            match consumer.fetch_watermarks(&row.topic, row.partition, Duration::from_secs(2)) {
                Ok((_, high)) => Some(high),
                Err(error) => {
                    tracing::warn!(%error, topic = %row.topic, partition = row.partition, "reading the partition's end");
                    None
                }
            }
        });
        let per_second = (row.next_offset - before).max(0) as f64 / seconds;
        partitions.push(PartitionStatus { row, end, per_second });
    }
    Ok(partitions)
}

/// The status as a person reads it: a summary line, then one tab-separated line per partition.
pub fn render(sink: &str, partitions: &[PartitionStatus], now_ms: i64) -> String {
    let lag: i64 = partitions.iter().filter_map(PartitionStatus::lag).sum();
    let unknown = partitions.iter().filter(|partition| partition.end.is_none()).count();
    let rate: f64 = partitions.iter().map(|partition| partition.per_second).sum();
    let dead: i64 = partitions.iter().map(|partition| partition.row.dead_letters).sum();
    let mut out = format!(
        "sink {sink}: {} partitions, {lag} offsets behind{}, {rate:.0} offsets/s applied, {dead} dead letters\n",
        partitions.len(),
        if unknown > 0 { format!(" ({unknown} partitions' ends unknown)") } else { String::new() },
    );
    out.push_str("TOPIC\tPARTITION\tPOSITION\tEND\tLAG\tOFFSETS/S\tDEAD_LETTERS\tUPDATED\n");
    for partition in partitions {
        let row = &partition.row;
        let (end, lag) = match (partition.end, partition.lag()) {
            (Some(end), Some(lag)) => (end.to_string(), lag.to_string()),
            _ => ("?".to_string(), "?".to_string()),
        };
        let ago = (now_ms - row.updated_at_ms).max(0) / 1000;
        out.push_str(&format!(
            "{}\t{}\t{}\t{end}\t{lag}\t{:.0}\t{}\t{ago} s ago\n",
            row.topic, row.partition, row.next_offset, partition.per_second, row.dead_letters
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(topic: &str, partition: i32, next_offset: i64, end: Option<i64>, per_second: f64) -> PartitionStatus {
        let row = PositionRow { topic: topic.into(), partition, next_offset, updated_at_ms: 10_000, dead_letters: 1 };
        PartitionStatus { row, end, per_second }
    }

    #[test]
    fn renders_lag_rate_and_unknown_ends() {
        let partitions = [partition("charges", 0, 90, Some(100), 12.4), partition("charges", 1, 50, None, 0.0)];
        assert_eq!(partitions[0].lag(), Some(10));
        assert_eq!(partitions[1].lag(), None);
        let text = render("billing", &partitions, 15_500);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "sink billing: 2 partitions, 10 offsets behind (1 partitions' ends unknown), 12 offsets/s applied, 2 dead letters"
        );
        assert_eq!(lines[2], "charges\t0\t90\t100\t10\t12\t1\t5 s ago");
        assert_eq!(lines[3], "charges\t1\t50\t?\t?\t0\t1\t5 s ago");
    }

    #[test]
    fn a_position_at_the_end_has_no_lag() {
        assert_eq!(partition("t", 0, 100, Some(100), 0.0).lag(), Some(0));
        assert_eq!(partition("t", 0, 100, Some(0), 0.0).lag(), Some(0), "a truncated end never gives negative lag");
    }
}
