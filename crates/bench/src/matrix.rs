//! W1 (and W2 beside it): acks=all produce over a matrix of record sizes × partition counts, plain
//! and, unless `--no-idempotent`, idempotent, with the broker's CPU and memory when `--broker-pid`
//! is given. The cells run interleaved within each run, so drift of the machine hits them alike.

use crate::process;
use crate::produce::{self, Workload};
use crate::rows::{Measurement, Row};
use crate::Plan;

/// One cell: a record size, a partition count and a producer.
#[derive(Debug, Clone, Copy)]
struct Cell {
    record_bytes: usize,
    partitions: i32,
    workload: Workload,
}

fn cells(plan: &Plan) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &record_bytes in &plan.args.record_sizes {
        for &partitions in &plan.args.partition_counts {
            cells.push(Cell { record_bytes, partitions, workload: Workload::Plain });
            if !plan.args.no_idempotent {
                cells.push(Cell { record_bytes, partitions, workload: Workload::Idempotent });
            }
        }
    }
    cells
}

/// Runs every cell `plan.runs` times and returns a row per cell.
pub fn run(plan: &Plan, run_id: u128) -> anyhow::Result<Vec<Row>> {
    anyhow::ensure!(plan.args.record_sizes.iter().all(|&bytes| bytes > 0), "--record-sizes must all be at least 1");
    anyhow::ensure!(plan.args.partition_counts.iter().all(|&count| count > 0), "--partition-counts must be ≥ 1");
    let cells = cells(plan);
    let mut measured: Vec<Vec<Measurement>> = vec![Vec::new(); cells.len()];
    for index in 0..plan.runs {
        for (slot, cell) in cells.iter().enumerate() {
            let mut cell_plan = plan.clone();
            cell_plan.args.record_bytes = cell.record_bytes;
            cell_plan.args.partitions = cell.partitions;
            let topic = format!("{}-{run_id}-w1-{index}-{slot}", plan.args.topic_prefix);
            eprintln!(
                "run {}/{}: {} produce, {} B × {} partition(s)",
                index + 1,
                plan.runs,
                cell.workload.name(),
                cell.record_bytes,
                cell.partitions
            );
            let (outcome, cost) =
                process::measure(&plan.args.broker_pid, || produce::run(&cell_plan, &topic, cell.workload))?;
            eprintln!("  {} records in {:.2} s", outcome.records, outcome.elapsed.as_secs_f64());
            measured[slot].push(outcome.into_measurement(cell.record_bytes, cost));
        }
    }
    let rows = cells
        .iter()
        .zip(measured)
        .map(|(cell, runs)| Row {
            workload: match cell.workload {
                Workload::Plain => "W1 produce acks=all".to_string(),
                Workload::Idempotent => "W2 idempotent produce acks=all".to_string(),
            },
            system: plan.args.system.clone(),
            durability: plan.args.durability.clone(),
            record_bytes: cell.record_bytes,
            setting: format!(
                "{} partition(s), {} producers × {} in flight{}",
                cell.partitions,
                plan.args.producers,
                plan.args.in_flight,
                plan.args
                    .max_in_flight_requests
                    .map(|requests| format!(", max.in.flight.requests.per.connection={requests}"))
                    .unwrap_or_default()
            ),
            runs,
        })
        .collect();
    Ok(rows)
}
