//! Consumer groups with librdkafka consumer processes: partitions split and taken over after a
//! SIGKILL with no record lost (commit after processing), a restarted group resumes from its
//! committed offsets, cooperative-sticky rebalances incrementally, static members rejoin without a
//! rebalance.

mod groups_support;
mod support;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use groups_support::{committed_offsets, produce, run_worker_if_requested, wait_until, Worker, WorkerConfig};
use support::{once, BrokerProcess};

const WORKER_TEST: &str = "consumer_worker";

/// Not a test: the entry point of consumer processes the other tests spawn (returns at once otherwise).
#[test]
fn consumer_worker() {
    run_worker_if_requested();
}

fn config(broker: &BrokerProcess, topic: &str, group: &str, strategy: &str) -> WorkerConfig {
    WorkerConfig {
        bootstrap: broker.bootstrap(),
        topic: topic.into(),
        group: group.into(),
        strategy: strategy.into(),
        instance_id: None,
        session_timeout_ms: 3000,
    }
}

fn values(range: std::ops::Range<usize>, partitions: usize) -> Vec<(i32, String)> {
    range.map(|number| ((number % partitions) as i32, format!("v-{number}"))).collect()
}

fn union_of_assignments(workers: &[&Worker]) -> Vec<i32> {
    let mut all: Vec<i32> = workers.iter().flat_map(|worker| worker.current_assignment()).collect();
    all.sort();
    all
}

fn seen(workers: &[&Worker]) -> HashSet<String> {
    workers.iter().flat_map(|worker| worker.records()).map(|(_, _, value)| value).collect()
}

#[test]
fn three_consumers_split_take_over_after_kill_and_resume() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "work", "--partitions", "6", "--bootstrap", &bootstrap]);
    let config = config(&broker, "work", "workers", "range");
    let mut first = Worker::spawn(WORKER_TEST, &config);
    let mut second = Worker::spawn(WORKER_TEST, &config);
    let mut third = Worker::spawn(WORKER_TEST, &config);
    wait_until(Duration::from_secs(60), "three consumers split six partitions", || {
        [&first, &second, &third].iter().all(|worker| worker.current_assignment().len() == 2)
            && union_of_assignments(&[&first, &second, &third]) == vec![0, 1, 2, 3, 4, 5]
    });

    produce(&bootstrap, "work", &values(0..300, 6));
    wait_until(Duration::from_secs(60), "the first 300 records processed", || {
        seen(&[&first, &second, &third]).len() == 300
    });
    let killed_partitions = first.current_assignment();
    first.kill9();
    produce(&bootstrap, "work", &values(300..600, 6));
    wait_until(Duration::from_secs(60), "the survivors take over the killed consumer's partitions", || {
        union_of_assignments(&[&second, &third]) == vec![0, 1, 2, 3, 4, 5] && second.current_assignment().len() == 3
    });
    wait_until(Duration::from_secs(60), "every record processed", || seen(&[&first, &second, &third]).len() == 600);
    let survivors_records: HashSet<i32> = second
        .records()
        .into_iter()
        .chain(third.records())
        .filter(|(_, _, value)| value.trim_start_matches("v-").parse::<usize>().is_ok_and(|number| number >= 300))
        .map(|(partition, _, _)| partition)
        .collect();
    for partition in &killed_partitions {
        assert!(
            survivors_records.contains(partition),
            "partition {partition} of the killed consumer was consumed by a survivor"
        );
    }
    wait_until(Duration::from_secs(30), "commits reach the end of every partition", || {
        committed_offsets(&bootstrap, "workers", "work", 6) == vec![100; 6]
    });
    second.stop();
    third.stop();

    // A restarted group resumes from its committed offsets: only the new records arrive.
    produce(&bootstrap, "work", &values(600..660, 6));
    let restarted = Worker::spawn(WORKER_TEST, &config);
    wait_until(Duration::from_secs(60), "the restarted group reads the new records", || {
        restarted.records().len() >= 60
    });
    std::thread::sleep(Duration::from_secs(1));
    let numbers: BTreeSet<usize> =
        restarted.records().iter().filter_map(|(_, _, value)| value.trim_start_matches("v-").parse().ok()).collect();
    assert_eq!(numbers, (600..660).collect(), "the restarted group reads exactly the uncommitted records");
    assert_eq!(restarted.records().len(), 60, "no record is read twice after a clean restart");
}

#[test]
fn cooperative_sticky_rebalances_incrementally() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "sticky", "--partitions", "6", "--bootstrap", &bootstrap]);
    let config = config(&broker, "sticky", "sticky-group", "cooperative-sticky");
    let first = Worker::spawn(WORKER_TEST, &config);
    wait_until(Duration::from_secs(60), "the first consumer owns all partitions", || {
        first.current_assignment().len() == 6
    });
    let second = Worker::spawn(WORKER_TEST, &config);
    wait_until(Duration::from_secs(60), "the partitions are shared", || {
        first.current_assignment().len() == 3
            && second.current_assignment().len() == 3
            && union_of_assignments(&[&first, &second]) == vec![0, 1, 2, 3, 4, 5]
    });
    // Incremental: the first consumer gave up only the partitions that moved, never all six.
    let revoked: Vec<Vec<i32>> = first.revocations();
    assert!(!revoked.is_empty(), "the first consumer revoked something");
    assert!(revoked.iter().all(|partitions| partitions.len() < 6), "no eager revoke-everything: {revoked:?}");
    let kept: BTreeSet<i32> = first.current_assignment().into_iter().collect();
    assert!(
        first
            .assignments()
            .iter()
            .skip_while(|assignment| assignment.len() < 6)
            .all(|assignment| kept.iter().all(|partition| assignment.contains(partition))),
        "kept partitions were never revoked"
    );
    produce(&bootstrap, "sticky", &values(0..60, 6));
    wait_until(Duration::from_secs(60), "both consumers process records", || seen(&[&first, &second]).len() == 60);
}

#[test]
fn static_member_rejoins_without_rebalance() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "static", "--partitions", "6", "--bootstrap", &bootstrap]);
    let mut config_a = config(&broker, "static", "static-group", "range");
    config_a.session_timeout_ms = 15_000;
    config_a.instance_id = Some("instance-a".into());
    let mut config_b = config_a.clone();
    config_b.instance_id = Some("instance-b".into());
    let mut first = Worker::spawn(WORKER_TEST, &config_a);
    let second = Worker::spawn(WORKER_TEST, &config_b);
    wait_until(Duration::from_secs(60), "two static members share the partitions", || {
        first.current_assignment().len() == 3
            && second.current_assignment().len() == 3
            && union_of_assignments(&[&first, &second]) == vec![0, 1, 2, 3, 4, 5]
    });
    std::thread::sleep(Duration::from_secs(1));
    let before = first.current_assignment();
    let second_events =
        second.lines().iter().filter(|line| line.starts_with("ASSIGNED") || line.starts_with("REVOKE")).count();
    first.kill9();
    let restarted = Worker::spawn(WORKER_TEST, &config_a);
    wait_until(Duration::from_secs(30), "the static member gets its partitions back", || {
        !restarted.current_assignment().is_empty()
    });
    assert_eq!(restarted.current_assignment(), before, "the same partitions as before the restart");
    produce(&bootstrap, "static", &values(0..60, 6));
    wait_until(Duration::from_secs(30), "both members consume", || seen(&[&restarted, &second]).len() == 60);
    let second_events_after =
        second.lines().iter().filter(|line| line.starts_with("ASSIGNED") || line.starts_with("REVOKE")).count();
    assert_eq!(second_events_after, second_events, "the other member saw no rebalance: {:?}", second.lines());
}
