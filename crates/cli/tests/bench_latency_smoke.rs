//! `once bench --smoke --workload latency` (W7) and `--workload wire-produce` run end to end against a
//! real broker, so the commands do not rot. (Correctness of the commands only; the figures live in
//! docs/benchmarks.md.)

mod support;

use support::{once, BrokerProcess};

#[test]
fn latency_smoke_runs_against_a_real_broker() {
    let broker = BrokerProcess::start(&[]);
    let data = tempfile::tempdir().expect("temp dir");
    let bootstrap = broker.bootstrap();
    let data_dir = data.path().to_str().expect("utf-8");
    // Without the peers: whether redis-server and PostgreSQL are installed is the machine's business.
    let args = ["bench", "--smoke", "--workload", "latency", "--senders", "1,4", "--no-peers"];
    let output = once(&[&args[..], &["--bootstrap", &bootstrap, "--data-dir", data_dir]].concat());
    assert!(output.contains("N=4 senders, 1 shared librdkafka producer"), "the shared producer is reported:\n{output}");
    assert!(output.contains("N=4 senders, 4 librdkafka producers"), "a producer per sender too:\n{output}");
    assert!(output.contains("| raw write+fdatasync |"), "beside the raw baseline:\n{output}");
    assert!(output.contains("3 × raw p99 + 0.5 ms"), "and the goal's bound:\n{output}");
}

#[test]
fn wire_produce_smoke_runs_against_a_real_broker() {
    let broker = BrokerProcess::start(&[]);
    let args = ["bench", "--smoke", "--workload", "wire-produce", "--in-flight", "32", "--linger-ms", "0"];
    let output = once(&[&args[..], &["--bootstrap", &broker.bootstrap()]].concat());
    assert!(output.contains("| Once (wire producer) |"), "the wire producer is reported:\n{output}");
    assert!(output.contains("| Once (librdkafka) |"), "beside librdkafka:\n{output}");
    assert!(output.contains("| wire producer | "), "with its idempotent ÷ plain ratio:\n{output}");
}
