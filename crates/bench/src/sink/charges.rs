//! The sink workload's input and effect: `charge` records (a customer key, a JSON value with the
//! amount, a unique message id in header `id`) preloaded into a fresh topic, and the `charges`
//! table `once sink` inserts them into.

use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use crate::{produce, Plan};

/// Distinct customers the charges are spread over.
const CUSTOMERS: u64 = 100;

/// The statement `once sink` runs per record: the same for both delivery modes.
pub fn insert_statement(table: &str) -> String {
    format!(
        "INSERT INTO {table} (message_id, customer, amount) \
         VALUES (:header.id, :key, (:value::jsonb->>'amount')::numeric)"
    )
}

/// The effect table: the message id is its primary key, so a record applied twice would stop the
/// sink with a unique violation instead of passing unnoticed.
pub fn create_table(table: &str) -> String {
    format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} \
         (message_id TEXT PRIMARY KEY, customer TEXT NOT NULL, amount NUMERIC(12, 2) NOT NULL)"
    )
}

/// Charge `index` of round `round`: its partition, key, message id, JSON value and amount in cents.
pub struct Charge {
    pub partition: i32,
    pub customer: String,
    pub id: String,
    pub value: String,
    pub cents: i64,
}

impl Charge {
    pub fn new(round: usize, index: u64, partitions: i32) -> Charge {
        let customer = format!("customer-{}", index % CUSTOMERS);
        let cents = (index * 7919 % 10_000) as i64 + 100;
        let id = format!("charge-{round}-{index}");
        let value = format!(
            r#"{{"type":"charge","customer":"{customer}","amount":{}.{:02},"currency":"EUR","id":"{id}"}}"#,
            cents / 100,
            cents % 100
        );
        Charge { partition: (index % partitions as u64) as i32, customer, id, value, cents }
    }
}

/// What a round's topic holds.
pub struct Preloaded {
    pub topic: String,
    pub records: u64,
    /// The message id of each partition's last record: when all are in the table, all are.
    pub last_ids: Vec<String>,
    /// The sum of every amount, in cents.
    pub cents: i64,
    /// Bytes of one record's JSON value (they all have about this size).
    pub value_bytes: usize,
}

/// Creates `topic` and writes `plan.records` charges into it (idempotent, acks=all), spread over
/// the partitions in turn; checks that the partitions' high watermarks add up to them.
pub fn preload(plan: &Plan, topic: &str, round: usize) -> anyhow::Result<Preloaded> {
    produce::create_topic(plan, topic)?;
    let partitions = plan.args.partitions;
    let producer: ThreadedProducer<_> = crate::client_config(&plan.args.bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .create()
        .context("creating the preload producer")?;
    let mut preloaded = Preloaded {
        topic: topic.to_string(),
        records: plan.records,
        last_ids: vec![String::new(); partitions as usize],
        cents: 0,
        value_bytes: 0,
    };
    for index in 0..plan.records {
        let charge = Charge::new(round, index, partitions);
        let headers = OwnedHeaders::new().insert(Header { key: "id", value: Some(charge.id.as_str()) });
        let mut record = BaseRecord::<str, str>::to(topic)
            .partition(charge.partition)
            .key(&charge.customer)
            .payload(&charge.value)
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(error).context("enqueueing a charge"),
            }
        }
        preloaded.cents += charge.cents;
        preloaded.value_bytes = charge.value.len();
        preloaded.last_ids[charge.partition as usize] = charge.id;
    }
    producer.flush(Duration::from_secs(120)).context("waiting for the preload's acknowledgements")?;
    let stored = stored_records(plan, topic)?;
    anyhow::ensure!(stored == plan.records, "{topic} holds {stored} records after the preload, not {}", plan.records);
    Ok(preloaded)
}

/// The sum of the partitions' high watermarks.
fn stored_records(plan: &Plan, topic: &str) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = crate::client_config(&plan.args.bootstrap).create()?;
    let mut total = 0;
    for partition in 0..plan.args.partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
        total += u64::try_from(high - low)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_json_with_unique_ids_and_their_amount() {
        let charge = Charge::new(2, 12_345, 3);
        assert_eq!(charge.partition, 0, "12,345 is a multiple of 3");
        assert_eq!(charge.customer, "customer-45");
        assert_eq!(charge.id, "charge-2-12345");
        let amount = format!("\"amount\":{}.{:02},", charge.cents / 100, charge.cents % 100);
        assert!(charge.value.contains(&amount), "{} holds {amount}", charge.value);
        assert!((100..10_100).contains(&charge.cents), "an amount between 1.00 and 100.99");
        assert_ne!(Charge::new(2, 1, 3).id, Charge::new(3, 1, 3).id, "ids differ between rounds");
    }
}
