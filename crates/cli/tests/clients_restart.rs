//! The newest confluent-kafka (Python, librdkafka >= 2.10) across kill -9 of the broker: a
//! read_committed consumer and a transactional producer copy a topic (`tests/python/txn_copier.py`,
//! offsets committed with send_offsets_to_transaction), the broker is killed with SIGKILL after five
//! commits and restarted, and the copy must finish with every input record in the output exactly
//! once. The copier sets `metadata.recovery.strategy=none` as docs/clients.md asks: with librdkafka's
//! default (`rebootstrap`) send_offsets_to_transaction hangs forever after the only broker restarts
//! (librdkafka issues 5456 and 5511), which this test would report as a copier that never finished.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use support::txn::{read_to_end, Isolation};
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

    /// Waits for a stdout line `accept` takes; panics with the copier's stderr after `deadline`.
    fn wait_for(&mut self, deadline: Instant, what: &str, accept: impl Fn(&str) -> bool) -> String {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) if accept(&line) => return line,
                Ok(_) => continue,
                Err(_) => {
                    let _ = self.child.kill();
                    let status = self.child.wait().ok();
                    let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
                    let tail: Vec<&str> = stderr.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
                    panic!("the copier did not get to {what} (exit {status:?}); its stderr ends:\n{}", tail.join("\n"));
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

fn committed_count(line: &str) -> Option<u64> {
    line.strip_prefix("committed ")?.split(' ').next()?.parse().ok()
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
    copier.wait_for(deadline, "its first commits", |line| committed_count(line) >= Some(COMMITS_BEFORE_KILL));
    broker.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart();
    let done = copier.wait_for(deadline, "the end of the copy", |line| line.starts_with("done "));
    assert_eq!(done, format!("done {RECORDS}"), "the committed positions cover the input");
    let status = copier.child.wait().expect("wait for the copier");
    assert!(status.success(), "the copier exits cleanly: {status}");

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
