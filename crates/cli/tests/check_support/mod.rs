//! Shared set-up of the `once check` end-to-end tests: the checker's arguments for a real `once serve`
//! it starts and kills itself, and reading its JSON report.
#![allow(dead_code)]

use std::path::Path;

use once_check::{CheckArgs, DedupSource, Fault, Isolation, ProcessorSource, Workload};

/// The command that starts this build's broker on `data`. Recovery checkpoints are written every
/// second (`--recovery-checkpoint-bytes 1`), so that the checks' kills and power losses restart from
/// them.
pub fn once_serve(data: &Path) -> String {
    format!(
        "{} serve --data-dir {} --recovery-checkpoint-bytes 1",
        env!("CARGO_BIN_EXE_once"),
        data.join("data").display()
    )
}

/// This build's `once copy`, for the `txn` workload's copiers.
pub fn once_copy() -> String {
    format!("{} copy", env!("CARGO_BIN_EXE_once"))
}

/// This build's `once sink`, for the `sink` workload's sinks.
pub fn once_sink() -> String {
    format!("{} sink", env!("CARGO_BIN_EXE_once"))
}

/// This build's `once dedup`, for the `dedup-processor` workload's processors.
pub fn once_dedup() -> String {
    format!("{} dedup", env!("CARGO_BIN_EXE_once"))
}

/// This build's producer process, for the `dedup` and `txn` workloads' producers.
pub fn once_check_producer() -> String {
    format!("{} check-producer", env!("CARGO_BIN_EXE_once"))
}

/// Every fault except member crashes and client faults; `group` runs add `Fault::Crash`, `txn` and
/// `dedup-processor` runs `Fault::ClientKill` and `Fault::ClientPause`, `dedup` runs
/// `Fault::ClientKill`. Broker crashes are kill -9 or power loss at random.
pub fn args(data: &Path, workload: Workload, broker_cmd: String, duration: u64, seed: u64) -> CheckArgs {
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("free port");
    CheckArgs {
        bootstrap: port.to_string(),
        workload,
        duration,
        seed: Some(seed),
        json: Some(data.join("report.json")),
        report: Some(data.join("report.html")),
        broker_cmd: Some(broker_cmd),
        broker_log: Some(data.join("broker.log")),
        proxy: None,
        faults: vec![
            Fault::Reset,
            Fault::Delay,
            Fault::LostResponse,
            Fault::Duplicate,
            Fault::Kill,
            Fault::PowerLoss,
            Fault::Pause,
        ],
        fault_probability: 0.01,
        partitions: 3,
        producers: 2,
        rate: 400,
        producer_idempotence: true,
        members: 3,
        commit_before_process: false,
        copier_cmd: Some(once_copy()),
        txn_consumer_isolation: Isolation::ReadCommitted,
        producer_cmd: Some(once_check_producer()),
        dedup_source: DedupSource::Header,
        sinks: 3,
        sink_cmd: Some(once_sink()),
        sink_database: None,
        sink_at_least_once: None,
        processors: 3,
        processor_cmd: Some(once_dedup()),
        processor_source: ProcessorSource::Header,
    }
}

pub fn report(data: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(data.join("report.json")).expect("read the JSON report");
    serde_json::from_str(&text).expect("the report is JSON")
}

pub fn count(report: &serde_json::Value, pointer: &str) -> u64 {
    report.pointer(pointer).and_then(serde_json::Value::as_u64).unwrap_or_else(|| panic!("{pointer} in {report}"))
}
