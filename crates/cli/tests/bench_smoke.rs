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

/// The pid of the `once serve` listening on `bootstrap`, found in /proc (the test support does not expose it).
fn broker_pid(bootstrap: &str) -> String {
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let words: Vec<&[u8]> = cmdline.split(|&byte| byte == 0).collect();
        if words.contains(&&b"serve"[..]) && words.contains(&bootstrap.as_bytes()) {
            return entry.file_name().to_string_lossy().into_owned();
        }
    }
    panic!("no once serve process listens on {bootstrap}");
}

#[test]
fn workload_smokes_run_against_a_real_broker() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    let pid = broker_pid(&bootstrap);
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().to_str().expect("utf-8");
    let tsv = data.path().join("rows.tsv");
    let tsv_path = tsv.to_str().expect("utf-8");

    let limits = once(&["bench", "--smoke", "--workload", "limits", "--data-dir", data_dir, "--tsv", tsv_path]);
    assert!(limits.contains("| W0 limit | loopback TCP"), "loopback TCP is reported:\n{limits}");
    assert!(limits.contains("| W0 limit | raw append+fdatasync"), "raw fdatasync is reported:\n{limits}");

    let matrix = once(&[
        "bench",
        "--smoke",
        "--workload",
        "matrix",
        "--record-sizes",
        "100",
        "--partition-counts",
        "1,2",
        "--bootstrap",
        &bootstrap,
        "--broker-pid",
        &pid,
        "--tsv",
        tsv_path,
    ]);
    let plain = matrix.lines().find(|line| line.starts_with("| W1 produce acks=all | Once |")).expect(&matrix);
    assert!(plain.contains("| 100 | 1 partition(s)"), "one row per cell:\n{matrix}");
    assert!(!plain.contains("| — | — |"), "the broker's CPU and memory are measured:\n{matrix}");
    assert!(matrix.contains("| W2 idempotent produce acks=all | Once | "), "idempotent beside plain:\n{matrix}");

    let catch_up = once(&["bench", "--smoke", "--workload", "catch-up", "--bootstrap", &bootstrap, "--tsv", tsv_path]);
    assert!(catch_up.contains("| W5 consumer catch-up | Once |"), "the catch-up is reported:\n{catch_up}");

    let restart_bootstrap = format!("127.0.0.1:{}", support::free_port());
    let restart = once(&[
        "bench",
        "--smoke",
        "--workload",
        "restart",
        "--bootstrap",
        &restart_bootstrap,
        "--data-dir",
        data_dir,
        "--tsv",
        tsv_path,
    ]);
    assert!(restart.contains("| W6 restart after kill -9 | Once |"), "the restart is reported:\n{restart}");

    let rows = std::fs::read_to_string(&tsv).expect("the TSV file is written");
    assert!(rows.starts_with("workload\tsystem\t"), "one header:\n{rows}");
    assert_eq!(rows.matches("workload\tsystem\t").count(), 1, "the header is written once:\n{rows}");
    // A header, 3 limits, 4 matrix cells (1 size × 2 partition counts × plain, idempotent), 2 catch-up, 1 restart.
    assert_eq!(rows.lines().count(), 1 + 3 + 4 + 2 + 1, "every row is appended:\n{rows}");
}

/// The sink workload starts its own broker and throw-away PostgreSQL, runs `once sink` exactly-once and
/// at-least-once at two batch sizes, and checks after each run that every record was applied once.
#[test]
fn sink_bench_smoke_applies_every_record_in_both_modes() {
    let data = tempfile::tempdir().expect("temp dir");
    let output = once(&[
        "bench",
        "--smoke",
        "--workload",
        "sink",
        "--records",
        "2000",
        "--sink-batch-records",
        "100,500",
        "--data-dir",
        data.path().to_str().expect("utf-8"),
    ]);
    for batch in ["100", "500"] {
        for delivery in ["exactly-once", "at-least-once"] {
            let row = output
                .lines()
                .find(|line| line.starts_with(&format!("| {batch} | {delivery} |")))
                .unwrap_or_else(|| panic!("a row for {delivery} at {batch}:\n{output}"));
            assert!(row.ends_with("| 2000 / 2000 |"), "every record applied once:\n{output}");
        }
    }
}

/// W8: the synchronous producer alone and beside a catch-up reader, both phases reported per run.
#[test]
fn reader_latency_smoke_reports_both_phases() {
    let broker = BrokerProcess::start(&[]);
    let output = once(&["bench", "--smoke", "--workload", "reader-latency", "--bootstrap", &broker.bootstrap()]);
    assert!(output.contains("## W8: synchronous acks=all producer"), "the W8 table is printed:\n{output}");
    assert!(output.contains("| 1 | alone | "), "the producer alone is measured:\n{output}");
    assert!(output.contains("| 1 | beside the reader | "), "and beside the reader:\n{output}");
    assert!(output.contains("**p99.9 "), "the ratio is reported:\n{output}");
}

/// The HTTP workload against a broker with `--http-listen`: four rows (keyed and unkeyed POSTs,
/// idempotent and plain Kafka produce), each run's answers checked and a sample of keys retried
/// for their original offsets inside the benchmark.
#[test]
fn http_bench_smoke_runs_against_a_real_broker() {
    let port = support::free_port();
    let http = format!("127.0.0.1:{port}");
    let broker = BrokerProcess::start(&["--http-listen", &http]);
    support::wait_until("the HTTP listener", std::time::Duration::from_secs(30), || {
        std::net::TcpStream::connect(&http).is_ok()
    });
    let output = once(&["bench", "--smoke", "--workload", "http", "--http", &http, "--bootstrap", &broker.bootstrap()]);
    for row in ["HTTP POST, Idempotency-Key", "HTTP POST, no key", "Kafka produce, idempotent", "Kafka produce, plain"]
    {
        assert!(output.contains(&format!("| {row} |")), "row {row}:\n{output}");
    }
}
