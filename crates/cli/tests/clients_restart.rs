//! The newest confluent-kafka (Python, librdkafka >= 2.10) across kill -9 of the broker: a
//! read_committed consumer and a transactional producer copy a topic (`tests/python/txn_copier.py`,
//! offsets committed with send_offsets_to_transaction), the broker is killed with SIGKILL after five
//! commits and restarted, and the copy must finish with every input record in the output exactly
//! once, and the group's committed offsets must reach the input's end on every partition (the
//! offsets went through TxnOffsetCommit). The kill must land mid-copy: the copier has not finished
//! when the broker dies and commits again after the restart. The copier sets `metadata.recovery.strategy=none` as docs/clients.md asks: with librdkafka's
//! default (`rebootstrap`) send_offsets_to_transaction hangs forever after the only broker restarts
//! (librdkafka issues 5456 and 5511), which this test would report as a copier that never finished.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use support::txn::{committed_offsets, end_offsets, read_to_end, Isolation};
use support::{once, BrokerProcess};

const PARTITIONS: i32 = 3;
const RECORDS: usize = 3000;
/// Commits before the broker is killed.
const COMMITS_BEFORE_KILL: u64 = 5;
/// The whole copy, restart included: a hang shows up as this running out.
const COPY_TIMEOUT: Duration = Duration::from_secs(40);

/// The copier process; killed if the test gives up on it.
struct Copier {
    child: Child,
    lines: Receiver<String>,
    stderr_path: std::path::PathBuf,
}

impl Copier {
    fn spawn(bootstrap: &str, temp: &std::path::Path, strategy: &str) -> Copier {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/txn_copier.py");
        let stderr_path = temp.join("copier.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("copier stderr file");
        let (partitions, records) = (PARTITIONS.to_string(), RECORDS.to_string());
        let mut child = Command::new("python3")
            .args([script, bootstrap, "restart-in", "restart-out", "restart-copier", "restart-copier"])
            .args([partitions.as_str(), records.as_str(), strategy])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("run python3 (.ci/run installs confluent-kafka)");
        let stdout = child.stdout.take().expect("copier stdout");
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Copier { child, lines, stderr_path }
    }

    /// The copier's stderr, its last 30 lines.
    fn stderr_tail(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
        tail.join("\n")
    }

    /// The stdout lines printed so far (those still in the pipe may be missed).
    fn lines_so_far(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Waits for the copier to exit; kills it and panics with its stderr after `deadline`.
    fn exit_status(&mut self, deadline: Instant) -> std::process::ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the copier") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the copier printed done but did not exit; its stderr ends:\n{}", self.stderr_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for a stdout line `accept` takes, returning it and the lines before it; panics with the
    /// copier's stderr after `deadline`.
    fn wait_for(&mut self, deadline: Instant, what: &str, accept: impl Fn(&str) -> bool) -> (String, Vec<String>) {
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) if accept(&line) => return (line, before),
                Ok(line) => before.push(line),
                Err(_) => {
                    let _ = self.child.kill();
                    let status = self.child.wait().ok();
                    panic!(
                        "the copier did not get to {what} (exit {status:?}); its stderr ends:\n{}",
                        self.stderr_tail()
                    );
                }
            }
        }
    }
}

impl Drop for Copier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `committed TRANSACTIONS COPIED` → (TRANSACTIONS, COPIED).
fn committed(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.strip_prefix("committed ")?.split(' ');
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

fn committed_count(line: &str) -> Option<u64> {
    committed(line).map(|(transactions, _)| transactions)
}

#[test]
fn confluent_kafka_transactional_copier_survives_kill_9_of_the_broker() {
    let mut broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    for topic in ["restart-in", "restart-out"] {
        once(&["topic", "create", topic, "--partitions", &PARTITIONS.to_string(), "--bootstrap", &bootstrap]);
    }
    support::txn::produce_numbered(&bootstrap, "restart-in", PARTITIONS as usize, 0..RECORDS, None);
    let temp = tempfile::tempdir().expect("temp dir");
    // `rebootstrap` here reproduces the hang (see docs/clients.md); the test runs what the docs ask for.
    let strategy = std::env::var("ONCE_TEST_METADATA_RECOVERY_STRATEGY").unwrap_or_else(|_| "none".to_string());
    let mut copier = Copier::spawn(&bootstrap, temp.path(), &strategy);
    let deadline = Instant::now() + COPY_TIMEOUT;
    let (first, _) =
        copier.wait_for(deadline, "its first commits", |line| committed_count(line) >= Some(COMMITS_BEFORE_KILL));
    broker.kill9();
    // Nothing commits while the broker is dead: what the copier printed by now is all it committed
    // before the kill (the pause also lets the reader thread take what was still in the pipe).
    std::thread::sleep(Duration::from_millis(1500));
    let before_kill: Vec<String> = std::iter::once(first).chain(copier.lines_so_far()).collect();
    assert!(
        !before_kill.iter().any(|line| line.starts_with("done ")),
        "the copy ended before the kill: {before_kill:?}"
    );
    let (transactions_at_kill, copied_at_kill) =
        before_kill.iter().filter_map(|line| committed(line)).max().expect("commits before the kill");
    assert!(copied_at_kill < RECORDS as u64, "the kill lands mid-copy: {copied_at_kill} of {RECORDS} copied");
    broker.restart();
    let (done, after_restart) = copier.wait_for(deadline, "the end of the copy", |line| line.starts_with("done "));
    assert_eq!(done, format!("done {RECORDS}"), "the committed positions cover the input");
    let commits_after: Vec<(u64, u64)> = after_restart.iter().filter_map(|line| committed(line)).collect();
    assert!(
        commits_after.iter().any(|&(transactions, _)| transactions > transactions_at_kill),
        "the copier commits again after the restart: {after_restart:?}"
    );
    let status = copier.exit_status(Instant::now() + Duration::from_secs(20));
    assert!(status.success(), "the copier exits cleanly: {status}");

    // The copier's consumed positions went through TxnOffsetCommit: the group resumes at the end.
    let input_end = end_offsets(&bootstrap, "restart-in", PARTITIONS, Isolation::ReadUncommitted);
    let offsets_deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let committed = committed_offsets(&bootstrap, "restart-copier", "restart-in", PARTITIONS);
        if committed.as_ref().ok() == Some(&input_end) {
            break;
        }
        assert!(
            Instant::now() < offsets_deadline,
            "the group's committed offsets {committed:?} never reached the input's end {input_end:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let output = read_to_end(&bootstrap, "restart-out", PARTITIONS, Isolation::ReadCommitted);
    let mut values: Vec<usize> = output
        .iter()
        .map(|record| record.value.trim_start_matches("v-").parse().expect("a copied input value"))
        .collect();
    values.sort_unstable();
    let duplicates: Vec<usize> = values.windows(2).filter(|pair| pair[0] == pair[1]).map(|pair| pair[0]).collect();
    assert!(duplicates.is_empty(), "values copied twice: {:?}", &duplicates[..duplicates.len().min(10)]);
    let missing: Vec<usize> = (0..RECORDS).filter(|number| values.binary_search(number).is_err()).collect();
    assert!(missing.is_empty(), "values never copied: {:?}", &missing[..missing.len().min(10)]);
    assert_eq!(values.len(), RECORDS);
    for record in &output {
        let number: usize = record.value.trim_start_matches("v-").parse().expect("value");
        assert_eq!(record.partition, (number % PARTITIONS as usize) as i32, "copied to the input's partition");
    }
}
