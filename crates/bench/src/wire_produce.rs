//! `--workload wire-produce`: idempotent against plain at low concurrency — one producer,
//! `--in-flight` records outstanding, acks=all — with librdkafka and with the benchmark's own
//! [`WireProducer`](crate::wire_producer::WireProducer), interleaved in one run (librdkafka plain,
//! librdkafka idempotent, wire plain, wire idempotent, each on a new topic; idempotent before plain
//! in every other run), so the two ratios can tell the client's share of the cost of idempotence
//! from the broker's.
//!
//! The wire producer keeps up to `--max-in-flight-requests` (default 5, the idempotent maximum)
//! Produce requests in flight, plain and idempotent alike, and batches whatever is waiting when a
//! request may go (librdkafka with `linger.ms=0` does the same); librdkafka runs with `--linger-ms`.

use std::fmt::Write as _;

use anyhow::Context;

use crate::produce::{self, Workload};
use crate::rows::{Measurement, Row};
use crate::summary::Spread;
use crate::wire_producer::{self, WireProducer, IDEMPOTENT_REQUESTS_IN_FLIGHT_MAX};
use crate::Plan;

/// The four cells of one run, in the order they ran.
const CELLS: [(Client, Workload); 4] = [
    (Client::Librdkafka, Workload::Plain),
    (Client::Librdkafka, Workload::Idempotent),
    (Client::Wire, Workload::Plain),
    (Client::Wire, Workload::Idempotent),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Librdkafka,
    Wire,
}

/// Runs the cells `plan.runs` times; the rows, and a table of the ratios per run.
pub fn run(plan: &Plan, run_id: u128) -> anyhow::Result<(Vec<Row>, String)> {
    let mut measured: Vec<Vec<Measurement>> = vec![Vec::new(); CELLS.len()];
    let mut one_producer = plan.clone();
    one_producer.args.producers = 1;
    for run in 0..plan.runs {
        // Plain first in even runs, idempotent first in odd ones, so an effect of the order (the
        // previous topic's deletion, the disk's mode drifting) does not count against one of them.
        let order: [usize; 4] = if run % 2 == 0 { [0, 1, 2, 3] } else { [1, 0, 3, 2] };
        for cell in order {
            let (client, workload) = &CELLS[cell];
            let topic = format!("{}-{run_id}-{run}-{cell}", plan.args.topic_prefix);
            eprintln!("run {}/{}: {} {} to {topic}", run + 1, plan.runs, client_name(*client), workload.name());
            let measurement = match client {
                Client::Librdkafka => librdkafka(&one_producer, &topic, *workload),
                Client::Wire => wire(&one_producer, &topic, *workload),
            }
            .with_context(|| format!("run {}: {} {}", run + 1, client_name(*client), workload.name()))?;
            eprintln!("  {} records in {:.2} s", measurement.records, measurement.elapsed.as_secs_f64());
            measured[cell].push(measurement);
        }
    }
    let rows = CELLS
        .iter()
        .zip(measured)
        .map(|((client, workload), runs)| Row {
            workload: "idempotent at low concurrency".to_string(),
            system: format!("{} ({})", plan.args.system, client_name(*client)),
            durability: plan.args.durability.clone(),
            record_bytes: plan.args.record_bytes,
            setting: setting(plan, *client, *workload),
            runs,
        })
        .collect::<Vec<_>>();
    let ratios = ratio_table(&rows);
    Ok((rows, ratios))
}

fn client_name(client: Client) -> &'static str {
    match client {
        Client::Librdkafka => "librdkafka",
        Client::Wire => "wire producer",
    }
}

fn wire_requests_in_flight(plan: &Plan) -> usize {
    plan.args.max_in_flight_requests.map_or(IDEMPOTENT_REQUESTS_IN_FLIGHT_MAX, |requests| requests as usize)
}

fn setting(plan: &Plan, client: Client, workload: Workload) -> String {
    let requests = match (client, workload) {
        (Client::Librdkafka, Workload::Idempotent) => "librdkafka's idempotent request limit".to_string(),
        (Client::Librdkafka, Workload::Plain) => match plan.args.max_in_flight_requests {
            Some(requests) => format!("≤ {requests} requests in flight"),
            None => "librdkafka's default requests in flight".to_string(),
        },
        (Client::Wire, _) => format!("≤ {} requests in flight", wire_requests_in_flight(plan)),
    };
    let linger = match client {
        Client::Librdkafka => format!("linger.ms={}", plan.args.linger_ms),
        Client::Wire => "batches what waits (linger 0)".to_string(),
    };
    format!("{}, 1 producer × {} records in flight, {requests}, {linger}", workload.name(), plan.args.in_flight)
}

fn librdkafka(plan: &Plan, topic: &str, workload: Workload) -> anyhow::Result<Measurement> {
    Ok(produce::run(plan, topic, workload)?.into_measurement(plan.args.record_bytes, None))
}

fn wire(plan: &Plan, topic: &str, workload: Workload) -> anyhow::Result<Measurement> {
    produce::create_topic(plan, topic)?;
    let measured = wire_on(plan, topic, workload);
    if let Err(error) = produce::delete_topic(plan, topic) {
        eprintln!("once-bench: could not delete topic {topic}: {error:#}");
    }
    measured
}

fn wire_on(plan: &Plan, topic: &str, workload: Workload) -> anyhow::Result<Measurement> {
    let idempotent = workload == Workload::Idempotent;
    let mut producer =
        WireProducer::connect(&plan.args.bootstrap, topic, 0, idempotent, wire_requests_in_flight(plan))?;
    let payload: Vec<u8> = (0..plan.args.record_bytes).map(|index| (index % 251) as u8).collect();
    let window = plan.args.in_flight;
    // With `--broker-pid`, the broker's CPU while producing (after the producer id is assigned): the
    // direct measure of what idempotence costs the broker. The librdkafka cells have none, as their
    // interval would include creating and deleting the topic.
    let (outcome, cost) = crate::process::measure(&plan.args.broker_pid, || {
        wire_producer::produce_windowed(&mut producer, plan.records, window, window, &payload)
    })?;
    Ok(Measurement {
        records: outcome.records,
        value_bytes: outcome.records * plan.args.record_bytes as u64,
        elapsed: outcome.elapsed,
        latencies_us: outcome.latencies_us,
        cost,
    })
}

fn records_per_second(run: &Measurement) -> f64 {
    run.records as f64 / run.elapsed.as_secs_f64().max(1e-9)
}

/// Idempotent ÷ plain records/s per run, for each client, and their medians.
fn ratio_table(rows: &[Row]) -> String {
    let ratios = |plain: &Row, idempotent: &Row| -> Vec<f64> {
        plain.runs.iter().zip(&idempotent.runs).map(|(p, i)| records_per_second(i) / records_per_second(p)).collect()
    };
    let librdkafka = ratios(&rows[0], &rows[1]);
    let wire = ratios(&rows[2], &rows[3]);
    let mut text = String::from("\n| idempotent ÷ plain records/s | median (min–max) | per run |\n|---|---:|---|\n");
    for (name, values) in [("librdkafka", librdkafka), ("wire producer", wire)] {
        let spread = Spread::of(values.iter().copied());
        let runs = values.iter().map(|value| format!("{value:.2}")).collect::<Vec<_>>().join(", ");
        let _ = writeln!(text, "| {name} | {:.2} ({:.2}–{:.2}) | {runs} |", spread.median, spread.min, spread.max);
    }
    text
}
