//! `once bench --smoke` runs end to end against a real broker, so the benchmark command does not rot.
//! (A correctness check of the command only; the figures live in docs/benchmarks.md.)

mod support;

use support::{once, BrokerProcess};

#[test]
fn bench_smoke_runs_against_a_real_broker() {
    let broker = BrokerProcess::start(&[]);
    let data = tempfile::tempdir().expect("temp dir");
    let output = once(&[
        "bench",
        "--smoke",
        "--bootstrap",
        &broker.bootstrap(),
        "--data-dir",
        data.path().to_str().expect("utf-8"),
    ]);
    assert!(output.contains('|'), "a markdown table is printed:\n{output}");
    assert!(output.to_lowercase().contains("raw"), "the raw baseline is reported beside Once:\n{output}");
}

#[test]
fn copier_bench_smoke_runs_against_a_real_broker() {
    let broker = BrokerProcess::start(&[]);
    let output = once(&[
        "bench",
        "--smoke",
        "--copier",
        "--commit-intervals-ms",
        "100",
        "--partitions",
        "2",
        "--bootstrap",
        &broker.bootstrap(),
    ]);
    assert!(output.contains("| transactional, 100 ms commits |"), "the transactional copier is reported:\n{output}");
    assert!(output.contains("| non-transactional, 100 ms commits |"), "beside the baseline:\n{output}");
}
