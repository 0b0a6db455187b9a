//! `once txn …`: list, describe and abort transactions, like Kafka's `kafka-transactions.sh` — over
//! the blocking admin client.
//!
//! Aborting by transactional id does what a new incarnation of the producer does: InitProducerId
//! with that id, on which the coordinator bumps the producer epoch (fencing the old producer) and
//! aborts the open transaction. Aborting at a partition writes an abort marker there directly
//! (WriteTxnMarkers), for a transaction the coordinator no longer knows about ("hanging").

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::describe_producers_response::ProducerState;
use kafka_protocol::messages::describe_transactions_response::TransactionState;
use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::*;
use once_wire::ResponseError;

use crate::admin::{check, text, AdminClient};

#[derive(Args)]
pub struct TxnArgs {
    /// Broker to talk to, HOST:PORT.
    #[arg(long, global = true, env = "ONCE_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[command(flatten)]
    client_settings: crate::client_settings::ClientSettingsArgs,
    #[command(subcommand)]
    command: TxnCommand,
}

#[derive(Subcommand)]
enum TxnCommand {
    /// List transactional ids with their producer id and transaction state.
    List {
        /// Only transactions in this state, e.g. Ongoing, PrepareCommit, CompleteAbort (repeatable).
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
    },
    /// Show a transaction: state, producer id and epoch, timeout, start time, partitions.
    Describe {
        /// The transactional id to describe.
        #[arg(long, value_name = "ID")]
        transactional_id: String,
    },
    /// Show the producers with state on a partition, and where their open transactions start.
    DescribeProducers {
        /// Topic of the partition.
        #[arg(long)]
        topic: String,
        /// Partition number.
        #[arg(long)]
        partition: i32,
    },
    /// Abort a transaction: by transactional id (fences its producer), or at one partition by producer.
    Abort(AbortArgs),
}

#[derive(Args)]
struct AbortArgs {
    /// Fence this transactional id's producer and abort its open transaction.
    #[arg(long, value_name = "ID", required_unless_present = "topic", conflicts_with = "topic")]
    transactional_id: Option<String>,
    /// Write an abort marker on this topic's --partition for --producer-id/--producer-epoch.
    #[arg(long, requires_all = ["partition", "producer_id", "producer_epoch"])]
    topic: Option<String>,
    /// Partition of --topic to write the marker on.
    #[arg(long)]
    partition: Option<i32>,
    /// Producer id of the hanging transaction (see `once txn describe-producers`).
    #[arg(long)]
    producer_id: Option<i64>,
    /// Producer epoch of the hanging transaction.
    #[arg(long)]
    producer_epoch: Option<i16>,
    /// Coordinator epoch of the marker [default: the producer's, from DescribeProducers].
    #[arg(long)]
    coordinator_epoch: Option<i32>,
}

/// FindCoordinator key type of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;
/// How long `abort --transactional-id` waits out CONCURRENT_TRANSACTIONS and coordinator moves.
const ABORT_WAIT: Duration = Duration::from_secs(30);

pub fn run(args: TxnArgs) -> anyhow::Result<()> {
    let mut client = AdminClient::connect_with(&args.bootstrap, &args.client_settings)?;
    match args.command {
        TxnCommand::List { states } => list(&mut client, &states),
        TxnCommand::Describe { transactional_id } => {
            let mut coordinator = connect_coordinator(&mut client, &transactional_id)?;
            print_transaction(&describe(&mut coordinator, &transactional_id)?);
            Ok(())
        }
        TxnCommand::DescribeProducers { topic, partition } => {
            print_producers(&topic, partition, &producers(&mut client, &topic, partition)?);
            Ok(())
        }
        TxnCommand::Abort(abort) => match (&abort.transactional_id, &abort.topic) {
            (Some(transactional_id), _) => abort_by_id(&mut client, &args.bootstrap, transactional_id),
            (None, Some(topic)) => abort_at_partition(&mut client, topic, &abort),
            (None, None) => bail!("say what to abort: --transactional-id ID, or --topic/--partition/--producer-id"),
        },
    }
}

fn list(client: &mut AdminClient, states: &[String]) -> anyhow::Result<()> {
    let request =
        ListTransactionsRequest::default().with_state_filters(states.iter().map(|state| text(state)).collect());
    let response = client.call(&request, 0)?;
    check(response.error_code, None, "listing transactions")?;
    for unknown in &response.unknown_state_filters {
        crate::report!("once txn list: the broker does not know the state '{}'", unknown.as_str());
    }
    let mut rows: Vec<_> = response.transaction_states.iter().collect();
    rows.sort_by(|left, right| left.transactional_id.0.cmp(&right.transactional_id.0));
    println!("TRANSACTIONAL ID\tPRODUCER ID\tSTATE");
    for row in rows {
        println!("{}\t{}\t{}", row.transactional_id.0.as_str(), row.producer_id.0, row.transaction_state.as_str());
    }
    Ok(())
}

/// The coordinator's address for `transactional_id`, retried while it is loading or moving.
fn find_coordinator(client: &mut AdminClient, transactional_id: &str) -> anyhow::Result<String> {
    let request =
        FindCoordinatorRequest::default().with_key(text(transactional_id)).with_key_type(KEY_TYPE_TRANSACTION);
    let deadline = Instant::now() + ABORT_WAIT;
    loop {
        let response = client.call(&request, 3)?;
        match ResponseError::try_from_code(response.error_code) {
            None => return Ok(format!("{}:{}", response.host.as_str(), response.port)),
            Some(error) if error.is_retriable() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Some(_) => {
                check(response.error_code, response.error_message.as_ref(), "finding the transaction coordinator")?
            }
        }
    }
}

fn connect_coordinator(client: &mut AdminClient, transactional_id: &str) -> anyhow::Result<AdminClient> {
    let address = find_coordinator(client, transactional_id)?;
    client.connect_to(&address).with_context(|| format!("connecting to the transaction coordinator {address}"))
}

fn describe(coordinator: &mut AdminClient, transactional_id: &str) -> anyhow::Result<TransactionState> {
    let request =
        DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(text(transactional_id))]);
    let response = coordinator.call(&request, 0)?;
    let state = response.transaction_states.into_iter().next().context("empty DescribeTransactions response")?;
    check(state.error_code, None, &format!("describing transactional id '{transactional_id}'"))?;
    Ok(state)
}

fn print_transaction(state: &TransactionState) {
    println!("transactional id: {}", state.transactional_id.0.as_str());
    println!("state: {}", state.transaction_state.as_str());
    println!("producer id: {}", state.producer_id.0);
    println!("producer epoch: {}", state.producer_epoch);
    println!("transaction timeout ms: {}", state.transaction_timeout_ms);
    println!("transaction start time: {}", start_time(state.transaction_start_time_ms));
    let partitions: Vec<String> = state
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(move |partition| format!("{}-{partition}", topic.topic.0.as_str()))
        })
        .collect();
    println!("partitions: {}", if partitions.is_empty() { "-".to_string() } else { partitions.join(", ") });
}

/// A start time in ms since the epoch, with how long ago it was; `-` when there is none (-1).
fn start_time(millis: i64) -> String {
    if millis < 0 {
        return "-".to_string();
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or(0);
    format!("{millis} ({:.1} s ago)", (now - millis).max(0) as f64 / 1000.0)
}

fn producers(client: &mut AdminClient, topic: &str, partition: i32) -> anyhow::Result<Vec<ProducerState>> {
    let request = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
        .with_name(TopicName(text(topic)))
        .with_partition_indexes(vec![partition])]);
    let response = crate::admin::leader_client(client, topic, partition)?.call(&request, 0)?;
    let found = response
        .topics
        .into_iter()
        .flat_map(|topic| topic.partitions)
        .find(|found| found.partition_index == partition)
        .with_context(|| format!("{topic}-{partition} missing from the DescribeProducers response"))?;
    check(found.error_code, found.error_message.as_ref(), &format!("describing producers of {topic}-{partition}"))?;
    Ok(found.active_producers)
}

fn print_producers(topic: &str, partition: i32, producers: &[ProducerState]) {
    println!("producers of {topic}-{partition}: {}", producers.len());
    println!("PRODUCER ID\tEPOCH\tLAST SEQUENCE\tLAST TIMESTAMP\tCOORDINATOR EPOCH\tTRANSACTION START OFFSET");
    for producer in producers {
        let open = if producer.current_txn_start_offset >= 0 {
            producer.current_txn_start_offset.to_string()
        } else {
            "-".to_string()
        };
        println!(
            "{}\t{}\t{}\t{}\t{}\t{open}",
            producer.producer_id.0,
            producer.producer_epoch,
            producer.last_sequence,
            producer.last_timestamp,
            producer.coordinator_epoch
        );
    }
}

/// Fences `transactional_id` and aborts its open transaction: InitProducerId with that id, retried on
/// CONCURRENT_TRANSACTIONS (the coordinator is completing the abort) until it succeeds.
fn abort_by_id(client: &mut AdminClient, bootstrap: &str, transactional_id: &str) -> anyhow::Result<()> {
    let mut coordinator = connect_coordinator(client, transactional_id)?;
    let before = describe(&mut coordinator, transactional_id)?;
    let timeout_ms = if before.transaction_timeout_ms > 0 { before.transaction_timeout_ms } else { 60_000 };
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(text(transactional_id))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let deadline = Instant::now() + ABORT_WAIT;
    let mut backoff = Duration::from_millis(50);
    let response = loop {
        let response = coordinator.call(&request, 4)?;
        let retry = match ResponseError::try_from_code(response.error_code) {
            None => break response,
            Some(ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable) => {
                coordinator = connect_coordinator(&mut client.connect_to(bootstrap)?, transactional_id)?;
                true
            }
            Some(ResponseError::ConcurrentTransactions | ResponseError::CoordinatorLoadInProgress) => true,
            Some(error) => error.is_retriable(),
        };
        if !retry || Instant::now() >= deadline {
            check(response.error_code, None, &format!("aborting the transaction of '{transactional_id}'"))?;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(1));
    };
    let was = before.transaction_state.as_str();
    let ended = match was {
        "Ongoing" => format!(
            "its Ongoing transaction (producer id {} epoch {}) was aborted",
            before.producer_id.0, before.producer_epoch
        ),
        "PrepareCommit" | "PrepareAbort" => {
            format!("its transaction was already ending ({was}) and was left to finish")
        }
        _ => format!("it had no open transaction ({was})"),
    };
    println!(
        "fenced transactional id {transactional_id}: {ended}; producer id {} epoch {} now holds it",
        response.producer_id.0, response.producer_epoch
    );
    Ok(())
}

/// Writes an abort marker for a producer's open transaction on one partition (WriteTxnMarkers v1).
fn abort_at_partition(client: &mut AdminClient, topic: &str, abort: &AbortArgs) -> anyhow::Result<()> {
    let (Some(partition), Some(producer_id), Some(producer_epoch)) =
        (abort.partition, abort.producer_id, abort.producer_epoch)
    else {
        bail!("--topic needs --partition, --producer-id and --producer-epoch");
    };
    let coordinator_epoch = match abort.coordinator_epoch {
        Some(epoch) => epoch,
        None => {
            let known = producers(client, topic, partition)?;
            let producer = known.iter().find(|producer| producer.producer_id.0 == producer_id).with_context(|| {
                format!("producer id {producer_id} has no state on {topic}-{partition}: nothing to abort there")
            })?;
            if producer.current_txn_start_offset < 0 {
                crate::report!(
                    "once txn abort: producer id {producer_id} has no open transaction on {topic}-{partition}"
                );
            }
            producer.coordinator_epoch.max(0)
        }
    };
    let marker = WritableTxnMarker::default()
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(producer_epoch)
        .with_transaction_result(false)
        .with_coordinator_epoch(coordinator_epoch)
        .with_topics(vec![WritableTxnMarkerTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partition_indexes(vec![partition])]);
    let mut leader = crate::admin::leader_client(client, topic, partition)?;
    let response = leader.call(&WriteTxnMarkersRequest::default().with_markers(vec![marker]), 1)?;
    let results: Vec<_> = response
        .markers
        .iter()
        .flat_map(|marker| marker.topics.iter())
        .flat_map(|topic| topic.partitions.iter())
        .collect();
    anyhow::ensure!(
        !results.is_empty(),
        "the broker answered WriteTxnMarkers without a result for {topic}-{partition}"
    );
    for result in results {
        let what = format!("writing an abort marker on {topic}-{}", result.partition_index);
        if result.error_code == ResponseError::TransactionCoordinatorFenced.code() {
            bail!("{what}: {}", coordinator_fenced_reason(coordinator_epoch));
        }
        check(result.error_code, None, &what)?;
    }
    println!(
        "aborted the transaction of producer id {producer_id} epoch {producer_epoch} on {topic}-{partition} \
         (coordinator epoch {coordinator_epoch})"
    );
    Ok(())
}

/// The coordinator epoch Once's transaction coordinator writes in its markers (`once_txn`'s
/// `COORDINATOR_EPOCH`; Once has one coordinator, so it never changes).
const ONCE_COORDINATOR_EPOCH: i32 = 0;

/// Why a partition answered TRANSACTION_COORDINATOR_FENCED to a marker naming `coordinator_epoch`.
fn coordinator_fenced_reason(coordinator_epoch: i32) -> String {
    if coordinator_epoch > ONCE_COORDINATOR_EPOCH {
        format!(
            "refused coordinator epoch {coordinator_epoch} (TRANSACTION_COORDINATOR_FENCED): Once's transaction \
             coordinator uses coordinator epoch {ONCE_COORDINATOR_EPOCH}, and a marker from a higher one would \
             fence all its later markers for this producer; leave out --coordinator-epoch to use the producer's"
        )
    } else {
        format!(
            "refused coordinator epoch {coordinator_epoch} (TRANSACTION_COORDINATOR_FENCED): the partition has \
             seen a newer coordinator epoch for this producer (see `once txn describe-producers`)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        txn: TxnArgs,
    }

    #[test]
    fn abort_takes_a_transactional_id_or_a_partition_and_producer_never_both() {
        assert!(Wrapper::try_parse_from(["once", "abort", "--transactional-id", "t"]).is_ok());
        let partition_level =
            ["once", "abort", "--topic", "pay", "--partition", "0", "--producer-id", "7", "--producer-epoch", "0"];
        assert!(Wrapper::try_parse_from(partition_level).is_ok());
        assert!(Wrapper::try_parse_from(["once", "abort"]).is_err(), "something to abort is required");
        assert!(
            Wrapper::try_parse_from(["once", "abort", "--topic", "pay", "--partition", "0"]).is_err(),
            "a partition-level abort names the producer"
        );
        assert!(
            Wrapper::try_parse_from(["once", "abort", "--transactional-id", "t", "--topic", "pay"]).is_err(),
            "not both"
        );
    }

    #[test]
    fn start_times_read_well() {
        assert_eq!(start_time(-1), "-");
        assert!(start_time(1_700_000_000_000).starts_with("1700000000000 ("));
    }
}
