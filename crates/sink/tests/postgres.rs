//! The PostgreSQL backend against a real server (a throw-away cluster per test): the issue's
//! statement with its casts, every parameter's type, the fence under stale and racing sinks,
//! poison records, dead letters, a library handler's effects and the inbox.

mod support {
    pub mod pg;
}

use once_sink::postgres::{PgTransaction, PostgresBackend};
use once_sink::{
    apply_batch, apply_batch_dead_lettering, Backend, Batch, BatchError, DbError, Dedup, Effect, EffectError, Outcome,
    PartitionKey, Record,
};
use support::pg::PgCluster;

const CHARGE: &str =
    "INSERT INTO charges(order_id, amount, off) VALUES (:key, (:value::jsonb->>'amount')::numeric, :offset)";

fn key() -> PartitionKey {
    PartitionKey { sink: "billing".into(), topic: "orders".into(), partition: 0 }
}

fn record(offset: i64, amount: &str) -> Record {
    Record {
        topic: "orders".into(),
        partition: 0,
        offset,
        timestamp_ms: Some(1_700_000_000_000 + offset),
        key: Some(format!("order-{offset}").into_bytes()),
        value: Some(format!("{{\"amount\": {amount}}}").into_bytes()),
        headers: vec![("message-id".into(), Some(format!("m{offset}").into_bytes()))],
    }
}

fn records(range: std::ops::Range<i64>) -> Vec<Record> {
    range.map(|offset| record(offset, &offset.to_string())).collect()
}

fn cluster_with_charges() -> PgCluster {
    let cluster = PgCluster::start();
    cluster.psql("CREATE TABLE charges(order_id TEXT, amount NUMERIC CHECK (amount >= 0), off BIGINT)");
    cluster
}

fn open(cluster: &PgCluster) -> PostgresBackend {
    PostgresBackend::open(&cluster.url(), &[CHARGE.to_string()]).expect("open backend")
}

#[test]
fn the_issue_statement_and_every_parameter_bind() {
    let cluster = cluster_with_charges();
    cluster.psql("CREATE TABLE raw(k BYTEA, v BYTEA, v_text TEXT, topic TEXT, part INT, off BIGINT, ts BIGINT, id TEXT, absent TEXT)");
    let everything = "INSERT INTO raw VALUES (:key, :value, :value_text, :topic, :partition, :offset, :timestamp, :header.message-id, :header.absent)";
    let mut backend =
        PostgresBackend::open(&cluster.url(), &[CHARGE.to_string(), everything.to_string()]).expect("open");
    let batch = vec![record(0, "50"), record(1, "12.5")];
    let outcome = apply_batch(&mut backend, None, &Batch { key: &key(), from: 0, records: &batch });
    assert_eq!(outcome, Ok(Outcome::Applied { to: 2, applied: 2, duplicates: 0 }));
    assert_eq!(
        cluster.psql("SELECT string_agg(order_id || '=' || amount, ',' ORDER BY off) FROM charges"),
        "order-0=50,order-1=12.5"
    );
    assert_eq!(
        cluster.psql("SELECT convert_from(k, 'UTF8'), convert_from(v, 'UTF8'), v_text, topic, part, off, ts, id, absent IS NULL FROM raw WHERE off = 1"),
        "order-1|{\"amount\": 12.5}|{\"amount\": 12.5}|orders|0|1|1700000000001|m1|t"
    );
    assert_eq!(cluster.psql("SELECT sink, topic, partition, next_offset FROM once_sink_offsets"), "billing|orders|0|2");
    let (runtime, client) = backend.client();
    let row = runtime.block_on(client.query_one("SHOW idle_in_transaction_session_timeout", &[])).expect("show");
    assert_eq!(row.get::<_, String>(0), "30s", "a paused sink's transaction is aborted by the server");
}

#[test]
fn stale_and_racing_sinks_apply_every_record_exactly_once() {
    const TOTAL: i64 = 300;
    let cluster = cluster_with_charges();
    let (mut live, mut zombie) = (open(&cluster), open(&cluster));
    let key = key();
    assert_eq!(
        apply_batch(&mut live, None, &Batch { key: &key, from: 0, records: &records(0..3) }),
        Ok(Outcome::Applied { to: 3, applied: 3, duplicates: 0 })
    );
    assert_eq!(
        apply_batch(&mut zombie, None, &Batch { key: &key, from: 0, records: &records(0..5) }),
        Ok(Outcome::Refused { stored: 3 })
    );
    assert_eq!(cluster.psql("SELECT count(*) FROM charges"), "3", "the zombie applied nothing");
    drop((live, zombie));

    let url = cluster.url();
    let threads: Vec<_> = (0..4i64)
        .map(|sink| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut backend = PostgresBackend::open(&url, &[CHARGE.to_string()]).expect("open");
                let key = crate::key();
                let mut expected = backend.stored_position(&key).expect("read").expect("row");
                let mut size = sink;
                while expected < TOTAL {
                    size = size * 7 % 11 + 1;
                    let batch = records(expected..(expected + size.min(7)).min(TOTAL));
                    match apply_batch(&mut backend, None, &Batch { key: &key, from: expected, records: &batch }) {
                        Ok(Outcome::Applied { to, .. }) => expected = to,
                        Ok(Outcome::Refused { stored }) => expected = stored,
                        Err(BatchError::Database(DbError::Transient(_))) => {}
                        Err(error) => panic!("sink {sink}: {error}"),
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("sink thread");
    }
    assert_eq!(
        cluster.psql("SELECT count(*), count(DISTINCT off), min(off), max(off) FROM charges"),
        format!("{TOTAL}|{TOTAL}|0|{}", TOTAL - 1)
    );
    assert_eq!(cluster.psql("SELECT next_offset FROM once_sink_offsets"), TOTAL.to_string());
}

#[test]
fn a_poison_record_rolls_back_its_batch_and_the_connection_goes_on() {
    let cluster = cluster_with_charges();
    let mut backend = open(&cluster);
    let key = key();
    let batch = vec![record(0, "1"), record(1, "\"lots\""), record(2, "3")];
    match apply_batch(&mut backend, None, &Batch { key: &key, from: 0, records: &batch }) {
        Err(BatchError::Poison { topic, partition, offset, message }) => {
            assert_eq!((topic.as_str(), partition, offset), ("orders", 0, 1));
            assert!(message.starts_with("22P02"), "invalid_text_representation, with its SQLSTATE: {message}");
        }
        other => panic!("expected a poison record, got {other:?}"),
    }
    let negative = vec![record(0, "1"), record(1, "-4")];
    let error = apply_batch(&mut backend, None, &Batch { key: &key, from: 0, records: &negative })
        .expect_err("check constraint");
    assert!(error.to_string().contains("orders/0 offset 1") && error.to_string().contains("23514"), "{error}");
    assert_eq!(cluster.psql("SELECT count(*) FROM charges"), "0");
    assert_eq!(backend.stored_position(&key), Ok(None));
    assert_eq!(
        apply_batch(&mut backend, None, &Batch { key: &key, from: 0, records: &batch[..1] }),
        Ok(Outcome::Applied { to: 1, applied: 1, duplicates: 0 })
    );
}

#[test]
fn the_inbox_absorbs_a_repeated_message_id() {
    let cluster = cluster_with_charges();
    let mut backend = open(&cluster);
    let key = key();
    let dedup = Dedup::Header("message-id".into());
    let mut batch = records(0..4);
    batch[3].headers = batch[1].headers.clone();
    let outcome = apply_batch(&mut backend, Some(&dedup), &Batch { key: &key, from: 0, records: &batch });
    assert_eq!(outcome, Ok(Outcome::Applied { to: 4, applied: 3, duplicates: 1 }));
    assert_eq!(cluster.psql("SELECT string_agg(off::text, ',' ORDER BY off) FROM charges"), "0,1,2");
    assert_eq!(cluster.psql("SELECT count(*) FROM once_sink_inbox"), "3");
}

#[test]
fn sinks_starting_together_all_create_the_tables() {
    let cluster = PgCluster::start();
    let url = cluster.url();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PostgresBackend::open(&url, &[]).map(|_| ()))
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().expect("thread"), Ok(()), "concurrent CREATE TABLE IF NOT EXISTS is serialised");
    }
}

#[test]
fn a_dead_letter_and_a_handler_share_the_batch_transaction() {
    let cluster = cluster_with_charges();
    let mut backend = open(&cluster);
    let key = key();
    let batch = vec![record(0, "5"), record(1, "-1"), record(2, "7")];
    let poison = apply_batch(&mut backend, None, &Batch { key: &key, from: 0, records: &batch });
    let Err(BatchError::Poison { offset: 1, message, .. }) = poison else { panic!("poison at 1: {poison:?}") };
    assert!(message.contains("23514"), "the SQL state of the CHECK violation: {message}");
    let dead = [(1, message)];
    assert_eq!(
        apply_batch_dead_lettering(&mut backend, None, &Batch { key: &key, from: 0, records: &batch }, &dead),
        Ok(Outcome::Applied { to: 3, applied: 2, duplicates: 0 })
    );
    assert_eq!(cluster.psql("SELECT string_agg(off::text, ',' ORDER BY off) FROM charges"), "0,2");
    assert_eq!(
        cluster.psql(r#"SELECT "offset", convert_from(value, 'UTF8'), headers FROM once_sink_dead_letters"#),
        r#"1|{"amount": -1}|[["message-id","m1"]]"#
    );
    let positions = backend.positions("billing").expect("positions");
    assert_eq!((positions[0].next_offset, positions[0].dead_letters), (3, 1));

    // A library handler: it gets the open transaction, so its rows commit or vanish with the position.
    cluster.psql("CREATE TABLE calls(idempotency_key TEXT, amount NUMERIC CHECK (amount >= 0))");
    let handler = Box::new(|tx: &mut PgTransaction<'_>, effects: &[Effect<'_>]| {
        for effect in effects {
            let amount = String::from_utf8_lossy(effect.record.value.as_deref().unwrap_or_default()).into_owned();
            tx.execute(
                "INSERT INTO calls VALUES ($1, ($2::text::jsonb->>'amount')::numeric)",
                &[&effect.idempotency_key, &amount],
            )
            .map_err(|error| PgTransaction::effect_error(error, effect.record.offset))?;
        }
        Ok::<(), EffectError>(())
    });
    let mut handled = PostgresBackend::with_effects(&cluster.url(), handler).expect("open with a handler");
    let dedup = Dedup::Header("message-id".into());
    let next = vec![record(3, "1"), record(4, "-2")];
    let poison = apply_batch(&mut handled, Some(&dedup), &Batch { key: &key, from: 3, records: &next });
    assert!(matches!(poison, Err(BatchError::Poison { offset: 4, .. })), "{poison:?}");
    assert_eq!(cluster.psql("SELECT count(*) FROM calls"), "0", "rolled back with the batch");
    assert_eq!(
        apply_batch(&mut handled, Some(&dedup), &Batch { key: &key, from: 3, records: &next[..1] }),
        Ok(Outcome::Applied { to: 4, applied: 1, duplicates: 0 })
    );
    assert_eq!(cluster.psql("SELECT idempotency_key || '=' || amount FROM calls"), "m3=1");
    assert_eq!(cluster.psql("SELECT next_offset FROM once_sink_offsets"), "4");
}

/// Review of issue 15: a statement cancelled by `statement_timeout` (57014) is retried as transient,
/// not taken for a poison record that would stop the partition.
#[test]
fn a_statement_timeout_is_transient_not_poison() {
    let cluster = cluster_with_charges();
    let slow = "INSERT INTO charges(order_id, off) SELECT 'slow', :offset FROM pg_sleep(0.5)";
    let mut backend = PostgresBackend::open(&cluster.url(), &[slow.to_string()]).expect("open");
    let (runtime, client) = backend.client();
    runtime.block_on(client.batch_execute("SET statement_timeout = 50")).expect("set statement_timeout");
    let outcome = apply_batch(&mut backend, None, &Batch { key: &key(), from: 0, records: &records(0..1) });
    match outcome {
        Err(BatchError::Database(DbError::Transient(message))) => assert!(message.contains("57014"), "{message}"),
        other => panic!("expected a transient error, got {other:?}"),
    }
    assert_eq!(cluster.psql("SELECT count(*) FROM charges"), "0");
}

/// Review of issue 15: an error every record would meet (here the effect's table was dropped under
/// the sink: 42P01) stops the sink; it is not taken for one record's poison, which would stop or
/// dead-letter every record of the stream one by one.
#[test]
fn an_error_every_record_would_meet_is_fatal_not_poison() {
    let cluster = cluster_with_charges();
    let mut backend = open(&cluster);
    cluster.psql("DROP TABLE charges");
    let outcome = apply_batch(&mut backend, None, &Batch { key: &key(), from: 0, records: &records(0..2) });
    match outcome {
        Err(BatchError::Database(DbError::Fatal(message))) => assert!(message.contains("42P01"), "{message}"),
        other => panic!("expected a fatal error, got {other:?}"),
    }
}
