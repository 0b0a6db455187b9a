//! The fence on a real SQLite file: stale sinks refused, racing sinks apply each record once,
//! poison and crashes leave nothing behind.

use std::path::Path;

use super::SqliteBackend;
use crate::batch::{
    apply_batch, apply_batch_dead_lettering, apply_unfenced, Backend, Batch, BatchError, Effect, EffectError, Outcome,
    PartitionKey,
};
use crate::record::{Dedup, Record};

const EFFECT: &str =
    "INSERT INTO effects(topic, part, off, body, id) VALUES (:topic, :partition, :offset, :value_text, :header.id)";

fn setup(path: &Path) {
    let connection = rusqlite::Connection::open(path).expect("open");
    connection
        .execute_batch("CREATE TABLE IF NOT EXISTS effects(topic TEXT, part INTEGER, off INTEGER, body TEXT CHECK (body <> 'poison'), id TEXT)")
        .expect("create effects");
}

fn open(path: &Path) -> SqliteBackend {
    SqliteBackend::open(path, &[EFFECT.to_string()]).expect("open backend")
}

fn key() -> PartitionKey {
    PartitionKey { sink: "billing".into(), topic: "orders".into(), partition: 0 }
}

fn record(offset: i64, body: &str) -> Record {
    Record {
        topic: "orders".into(),
        partition: 0,
        offset,
        timestamp_ms: Some(offset),
        key: None,
        value: Some(body.as_bytes().to_vec()),
        headers: vec![("id".into(), Some(format!("m{offset}").into_bytes()))],
    }
}

fn records(range: std::ops::Range<i64>) -> Vec<Record> {
    range.map(|offset| record(offset, &format!("v{offset}"))).collect()
}

fn effect_offsets(backend: &SqliteBackend) -> Vec<i64> {
    let mut select = backend.connection().prepare("SELECT off FROM effects ORDER BY off").expect("prepare");
    let rows = select.query_map([], |row| row.get(0)).expect("query");
    rows.map(|row| row.expect("row")).collect()
}

#[test]
fn a_stale_sink_is_refused_and_applies_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sink.db");
    setup(&path);
    let (mut live, mut zombie) = (open(&path), open(&path));
    let key = key();
    assert_eq!(live.stored_position(&key), Ok(None));
    // Both were assigned the partition at 0 (the zombie before a rebalance it slept through).
    let first = records(0..3);
    let outcome = apply_batch(&mut live, None, &Batch { key: &key, from: 0, records: &first });
    assert_eq!(outcome, Ok(Outcome::Applied { to: 3, applied: 3, duplicates: 0 }));
    let stale = records(0..5);
    let outcome = apply_batch(&mut zombie, None, &Batch { key: &key, from: 0, records: &stale });
    assert_eq!(outcome, Ok(Outcome::Refused { stored: 3 }));
    assert_eq!(effect_offsets(&live), vec![0, 1, 2], "the zombie applied nothing");
    assert_eq!(live.stored_position(&key), Ok(Some(3)));
    // The zombie re-reads the position and carries on from there, which is correct.
    let from = zombie.stored_position(&key).expect("read").expect("row");
    let next = records(3..5);
    assert_eq!(
        apply_batch(&mut zombie, None, &Batch { key: &key, from, records: &next }),
        Ok(Outcome::Applied { to: 5, applied: 2, duplicates: 0 })
    );
    // And now the first sink, whose `expected` is 3, is the stale one.
    assert_eq!(
        apply_batch(&mut live, None, &Batch { key: &key, from: 3, records: &next }),
        Ok(Outcome::Refused { stored: 5 })
    );
    assert_eq!(effect_offsets(&live), vec![0, 1, 2, 3, 4]);
}

/// Four sinks, each with its own connection and thread, race over one partition: each reads the
/// position, "polls" a batch of 1–7 records from it, and applies; a refused one re-reads. Every
/// offset ends applied exactly once and the position equals the count.
#[test]
fn racing_sinks_apply_every_record_exactly_once() {
    const TOTAL: i64 = 400;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("race.db");
    setup(&path);
    let threads: Vec<_> = (0..4u64)
        .map(|sink| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut backend = open(&path);
                let key = key();
                let (mut applied, mut refused) = (0, 0);
                let mut expected = backend.stored_position(&key).expect("read").unwrap_or(0);
                let mut size = sink as i64;
                while expected < TOTAL {
                    size = size * 7 % 11 + 1;
                    let batch = records(expected..(expected + size.min(7)).min(TOTAL));
                    match apply_batch(&mut backend, None, &Batch { key: &key, from: expected, records: &batch }) {
                        Ok(Outcome::Applied { to, applied: count, .. }) => {
                            applied += count;
                            expected = to;
                        }
                        Ok(Outcome::Refused { stored }) => {
                            refused += 1;
                            expected = stored;
                        }
                        Err(BatchError::Database(crate::DbError::Transient(_))) => {}
                        Err(error) => panic!("sink {sink}: {error}"),
                    }
                }
                (applied, refused)
            })
        })
        .collect();
    let results: Vec<(usize, usize)> = threads.into_iter().map(|thread| thread.join().expect("sink thread")).collect();
    let backend = open(&path);
    assert_eq!(effect_offsets(&backend), (0..TOTAL).collect::<Vec<_>>(), "each record applied once, none lost");
    assert_eq!(results.iter().map(|(applied, _)| applied).sum::<usize>(), TOTAL as usize);
    let mut backend = backend;
    assert_eq!(backend.stored_position(&key()), Ok(Some(TOTAL)));
}

#[test]
fn a_poison_record_rolls_the_whole_batch_back_and_names_its_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("poison.db");
    setup(&path);
    let mut backend = open(&path);
    let key = key();
    let batch = vec![record(0, "ok"), record(1, "ok"), record(2, "poison"), record(3, "ok")];
    let error = apply_batch(&mut backend, None, &Batch { key: &key, from: 0, records: &batch }).expect_err("poison");
    match &error {
        BatchError::Poison { topic, partition, offset, message } => {
            assert_eq!((topic.as_str(), *partition, *offset), ("orders", 0, 2));
            assert!(message.contains("CHECK constraint failed"), "the SQL error: {message}");
        }
        other => panic!("expected poison, got {other:?}"),
    }
    assert!(error.to_string().contains("orders/0 offset 2"), "{error}");
    assert!(effect_offsets(&backend).is_empty(), "records before the poison one rolled back too");
    assert_eq!(backend.stored_position(&key), Ok(None), "the position row is rolled back with them");
    // The connection is usable afterwards.
    assert_eq!(
        apply_batch(&mut backend, None, &Batch { key: &key, from: 0, records: &batch[..2] }),
        Ok(Outcome::Applied { to: 2, applied: 2, duplicates: 0 })
    );
}

#[test]
fn the_inbox_absorbs_a_repeated_message_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("inbox.db");
    setup(&path);
    let mut backend = open(&path);
    let key = key();
    let dedup = Dedup::Header("id".into());
    let mut batch = records(0..3);
    batch[2].headers = batch[0].headers.clone(); // offset 2 repeats offset 0's message
    let outcome = apply_batch(&mut backend, Some(&dedup), &Batch { key: &key, from: 0, records: &batch });
    assert_eq!(outcome, Ok(Outcome::Applied { to: 3, applied: 2, duplicates: 1 }));
    let mut again = records(3..5);
    again[1].headers = batch[1].headers.clone(); // a repeat across batches
    again[0].headers.clear(); // no id: applied, fenced by the offset alone
    let outcome = apply_batch(&mut backend, Some(&dedup), &Batch { key: &key, from: 3, records: &again });
    assert_eq!(outcome, Ok(Outcome::Applied { to: 5, applied: 1, duplicates: 1 }));
    assert_eq!(effect_offsets(&backend), vec![0, 1, 3]);
    assert_eq!(backend.stored_position(&key), Ok(Some(5)), "the position passes skipped records");
}

#[test]
fn gaps_from_control_records_advance_past_the_last_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gaps.db");
    setup(&path);
    let mut backend = open(&path);
    let key = key();
    let batch = vec![record(5, "a"), record(7, "b")];
    assert_eq!(
        apply_batch(&mut backend, None, &Batch { key: &key, from: 4, records: &batch }),
        Ok(Outcome::Applied { to: 8, applied: 2, duplicates: 0 })
    );
    assert_eq!(backend.stored_position(&key), Ok(Some(8)));
}

#[test]
fn a_transaction_left_open_by_a_dead_process_is_not_visible() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("crash.db");
    setup(&path);
    let key = key();
    {
        let mut dying = open(&path);
        dying.begin().expect("begin");
        assert_eq!(dying.lock_position(&key, 0), Ok(0));
        let record = record(0, "x");
        dying.apply(&[Effect { record: &record, idempotency_key: "orders/0/0".into() }]).expect("apply");
        assert_eq!(dying.advance(&key, 0, 1), Ok(1));
        // Dropped without commit: the connection closes, as when the process dies.
    }
    let mut backend = open(&path);
    assert!(effect_offsets(&backend).is_empty());
    assert_eq!(backend.stored_position(&key), Ok(None));
}

#[test]
fn a_bad_statement_stops_the_sink_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.db");
    setup(&path);
    let unknown = SqliteBackend::open(&path, &["INSERT INTO effects(off) VALUES (:offst)".into()])
        .err()
        .expect("unknown parameter");
    assert!(unknown.to_string().contains(":offst") || unknown.to_string().contains("offst"), "{unknown}");
    let missing =
        SqliteBackend::open(&path, &["INSERT INTO nowhere VALUES (:offset)".into()]).err().expect("no such table");
    assert!(missing.to_string().contains("nowhere"), "{missing}");
}

#[test]
fn sinks_opening_a_fresh_file_together_all_set_it_up() {
    for round in 0..5 {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(format!("fresh-{round}.db"));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || SqliteBackend::open(&path, &[]).map(|_| ()))
            })
            .collect();
        for thread in threads {
            assert_eq!(thread.join().expect("thread"), Ok(()), "concurrent opens retry SQLITE_BUSY");
        }
    }
}

#[test]
fn a_dead_letter_is_written_in_the_batch_transaction_and_the_position_passes_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dead.db");
    setup(&path);
    let mut backend = open(&path);
    let key = key();
    let batch = vec![record(0, "a"), record(1, "poison"), record(2, "c")];
    let poison = apply_batch(&mut backend, None, &Batch { key: &key, from: 0, records: &batch });
    let Err(BatchError::Poison { offset: 1, message, .. }) = poison else { panic!("poison at 1: {poison:?}") };
    assert!(effect_offsets(&backend).is_empty() && backend.positions("billing") == Ok(vec![]), "all rolled back");
    let dead = [(1, message.clone())];
    let outcome = apply_batch_dead_lettering(&mut backend, None, &Batch { key: &key, from: 0, records: &batch }, &dead);
    assert_eq!(outcome, Ok(Outcome::Applied { to: 3, applied: 2, duplicates: 0 }));
    assert_eq!(effect_offsets(&backend), vec![0, 2]);
    let (offset, value, error): (i64, Vec<u8>, String) = backend
        .connection()
        .query_row(r#"SELECT "offset", value, error FROM once_sink_dead_letters"#, [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .expect("the dead letter");
    assert_eq!((offset, value.as_slice(), error), (1, b"poison".as_slice(), message));
    let rows = backend.positions("billing").expect("positions");
    assert_eq!((rows.len(), rows[0].next_offset, rows[0].dead_letters), (1, 3, 1));
    // A zombie holding the same batch is refused: no second dead letter, no effect.
    let stale = apply_batch_dead_lettering(&mut backend, None, &Batch { key: &key, from: 0, records: &batch }, &dead);
    assert_eq!(stale, Ok(Outcome::Refused { stored: 3 }));
    assert_eq!(backend.positions("billing").expect("positions")[0].dead_letters, 1);
}

#[test]
fn a_handler_gets_the_open_transaction_the_batch_and_idempotency_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("handler.db");
    setup(&path);
    let handler = Box::new(|connection: &rusqlite::Connection, effects: &[Effect<'_>]| {
        for effect in effects {
            if effect.record.value.as_deref() == Some(b"poison".as_slice()) {
                return Err(EffectError::Poison { offset: effect.record.offset, message: "refused".into() });
            }
            connection
                .execute(
                    "INSERT INTO effects(topic, off, id) VALUES (?1, ?2, ?3)",
                    (&effect.record.topic, effect.record.offset, &effect.idempotency_key),
                )
                .map_err(|error| EffectError::Fatal(error.to_string()))?;
        }
        Ok(())
    });
    let mut backend = SqliteBackend::with_effects(&path, handler).expect("open");
    let key = key();
    let dedup = Dedup::Header("id".into());
    let batch = records(0..3);
    assert_eq!(
        apply_batch(&mut backend, Some(&dedup), &Batch { key: &key, from: 0, records: &batch }),
        Ok(Outcome::Applied { to: 3, applied: 3, duplicates: 0 })
    );
    let ids: Vec<String> = {
        let mut select = backend.connection().prepare("SELECT id FROM effects ORDER BY off").expect("prepare");
        let rows = select.query_map([], |row| row.get(0)).expect("query");
        rows.map(|row| row.expect("row")).collect()
    };
    assert_eq!(ids, ["m0", "m1", "m2"], "the message id is the idempotency key");
    // Without --dedup the key is topic/partition/offset; a poison report rolls everything back.
    let next = vec![record(3, "d"), record(4, "poison")];
    let poison = apply_batch(&mut backend, None, &Batch { key: &key, from: 3, records: &next });
    assert!(matches!(poison, Err(BatchError::Poison { offset: 4, .. })), "{poison:?}");
    assert_eq!(effect_offsets(&backend), vec![0, 1, 2], "the batch with the poison record left nothing");
    assert_eq!(backend.stored_position(&key), Ok(Some(3)));
    assert_eq!(
        apply_batch(&mut backend, None, &Batch { key: &key, from: 3, records: &next[..1] }),
        Ok(Outcome::Applied { to: 4, applied: 1, duplicates: 0 })
    );
    let last: String =
        backend.connection().query_row("SELECT id FROM effects WHERE off = 3", [], |row| row.get(0)).expect("row");
    assert_eq!(last, "orders/0/3");
}

#[test]
fn a_handler_naming_a_record_it_was_not_given_stops_the_sink() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("liar.db");
    let handler = Box::new(|_: &rusqlite::Connection, _: &[Effect<'_>]| {
        Err(EffectError::Poison { offset: 99, message: "not mine".into() })
    });
    let mut backend = SqliteBackend::with_effects(&path, handler).expect("open");
    let batch = records(0..2);
    let outcome = apply_batch(&mut backend, None, &Batch { key: &key(), from: 0, records: &batch });
    assert!(matches!(outcome, Err(BatchError::Database(crate::batch::DbError::Fatal(_)))), "{outcome:?}");
}

#[test]
fn the_unfenced_baseline_applies_a_stale_batch_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("baseline.db");
    setup(&path);
    let mut backend = open(&path);
    let batch = records(0..3);
    for _ in 0..2 {
        let outcome = apply_unfenced(&mut backend, None, &Batch { key: &key(), from: 0, records: &batch });
        assert_eq!(outcome, Ok(Outcome::Applied { to: 3, applied: 3, duplicates: 0 }));
    }
    assert_eq!(effect_offsets(&backend), vec![0, 0, 1, 1, 2, 2], "what the fence prevents");
    assert_eq!(backend.positions("billing"), Ok(vec![]), "the baseline stores no position");
}

/// Review of issue 15: an error every record would meet (the effect's table dropped under the
/// sink) stops the sink instead of making each record poison in turn.
#[test]
fn an_error_every_record_would_meet_is_fatal_not_poison() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dropped.db");
    setup(&path);
    let mut backend = open(&path);
    rusqlite::Connection::open(&path).expect("open").execute_batch("DROP TABLE effects").expect("drop");
    let outcome = apply_batch(&mut backend, None, &Batch { key: &key(), from: 0, records: &records(0..2) });
    assert!(matches!(outcome, Err(BatchError::Database(crate::batch::DbError::Fatal(_)))), "{outcome:?}");
}
