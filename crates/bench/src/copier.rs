//! The copier workload (issue W3): a consume-transform-produce copier reading a pre-filled input
//! topic and writing an output topic, transactional at several commit intervals and, as the
//! baseline, non-transactional (an idempotent producer and an offset commit per interval). The
//! copier is the real `once copy` process; the time is from its start until a read_committed
//! consumer has seen every record in the output, so it counts what a downstream reader can use.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;

use crate::{produce, Plan};

/// Which copier a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopierMode {
    /// Exactly once: one transaction per commit interval, offsets inside it.
    Transactional { commit_interval_ms: u64 },
    /// At least once: idempotent producer, offsets committed after each flush.
    NonTransactional { commit_interval_ms: u64 },
}

impl CopierMode {
    pub fn label(self) -> String {
        match self {
            CopierMode::Transactional { commit_interval_ms } => {
                format!("transactional, {commit_interval_ms} ms commits")
            }
            CopierMode::NonTransactional { commit_interval_ms } => {
                format!("non-transactional, {commit_interval_ms} ms commits")
            }
        }
    }
}

/// One copier run.
#[derive(Debug, Clone)]
pub struct CopierOutcome {
    pub mode: CopierMode,
    /// Records read back from the output under read_committed.
    pub records: u64,
    /// From the copier's start to the last record visible under read_committed.
    pub elapsed: Duration,
}

impl CopierOutcome {
    pub fn records_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The copier command: `--copier-cmd` split on whitespace, or this executable's `copy`.
fn copier_command(plan: &Plan) -> anyhow::Result<Command> {
    match &plan.args.copier_cmd {
        Some(template) => {
            let mut words = template.split_whitespace();
            let program = words.next().context("--copier-cmd is empty")?;
            let mut command = Command::new(program);
            command.args(words);
            Ok(command)
        }
        None => {
            let mut command = Command::new(std::env::current_exe().context("locating the once executable")?);
            command.arg("copy");
            Ok(command)
        }
    }
}

/// Kills the copier when the run ends, however it ends.
struct CopierProcess(Child);

impl Drop for CopierProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fills `input` with the plan's records once; every copier run reads it.
pub fn fill_input(plan: &Plan, input: &str) -> anyhow::Result<u64> {
    let filled = produce::fill(plan, input).context("filling the copier input")?;
    Ok(filled.records)
}

/// Runs one copier from `input` to a fresh output topic and times it.
pub fn run(plan: &Plan, input: &str, records: u64, mode: CopierMode, tag: &str) -> anyhow::Result<CopierOutcome> {
    let output = format!("{input}-out-{tag}");
    produce::create_topic(plan, &output)?;
    let outcome = copy_and_time(plan, input, &output, records, mode, tag);
    if let Err(error) = produce::delete_topic(plan, &output) {
        eprintln!("once-bench: could not delete topic {output}: {error:#}");
    }
    outcome
}

fn copy_and_time(
    plan: &Plan,
    input: &str,
    output: &str,
    records: u64,
    mode: CopierMode,
    tag: &str,
) -> anyhow::Result<CopierOutcome> {
    let reader = committed_reader(plan, output)?;
    let mut command = copier_command(plan)?;
    command
        .args(["--bootstrap", &plan.args.bootstrap, "--from", input, "--to", output])
        .args(["--group", &format!("{output}-group")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match mode {
        CopierMode::Transactional { commit_interval_ms } => {
            command
                .args(["--transactional-id", &format!("{output}-{tag}")])
                .args(["--commit-interval-ms", &commit_interval_ms.to_string()]);
        }
        CopierMode::NonTransactional { commit_interval_ms } => {
            command.arg("--no-transactions").args(["--commit-interval-ms", &commit_interval_ms.to_string()]);
        }
    }
    let started = Instant::now();
    let mut copier = CopierProcess(command.spawn().context("starting the copier")?);
    let deadline = started + plan.delivery_timeout.max(Duration::from_secs(30)) * 4;
    let mut seen = 0u64;
    while seen < records {
        if let Some(status) = copier.0.try_wait()? {
            anyhow::bail!("the copier exited with {status} after {seen} of {records} records");
        }
        anyhow::ensure!(Instant::now() < deadline, "the copier copied {seen} of {records} records in time");
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => seen += 1,
            Some(Err(error)) => eprintln!("once-bench: copier output read: {error}"),
            None => {}
        }
    }
    let elapsed = started.elapsed();
    drop(copier);
    Ok(CopierOutcome { mode, records: seen, elapsed })
}

/// A read_committed consumer of every partition of `topic`, from the beginning.
fn committed_reader(plan: &Plan, topic: &str) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = crate::client_config(&plan.args.bootstrap)
        .set("group.id", format!("{topic}-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the output reader")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..plan.args.partitions {
        assignment.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Runs every mode `plan.runs` times, interleaved, and returns the markdown table.
pub fn run_all(plan: &Plan, run_id: u128) -> anyhow::Result<String> {
    let input = format!("{}-{run_id}-copier-in", plan.args.topic_prefix);
    let records = fill_input(plan, &input)?;
    let baseline_interval = 100;
    let mut modes = vec![CopierMode::NonTransactional { commit_interval_ms: baseline_interval }];
    modes.extend(
        plan.args
            .commit_intervals_ms
            .iter()
            .map(|&commit_interval_ms| CopierMode::Transactional { commit_interval_ms }),
    );
    let mut outcomes: Vec<Vec<CopierOutcome>> = vec![Vec::new(); modes.len()];
    for index in 0..plan.runs {
        for (slot, mode) in modes.iter().enumerate() {
            eprintln!("run {}/{}: copier, {}", index + 1, plan.runs, mode.label());
            let outcome = run(plan, &input, records, *mode, &format!("{index}-{slot}"))?;
            eprintln!(
                "run {}/{}: {} records copied in {:.2} s ({:.0} records/s)",
                index + 1,
                plan.runs,
                outcome.records,
                outcome.elapsed.as_secs_f64(),
                outcome.records_per_second()
            );
            outcomes[slot].push(outcome);
        }
    }
    if let Err(error) = produce::delete_topic(plan, &input) {
        eprintln!("once-bench: could not delete topic {input}: {error:#}");
    }
    Ok(markdown(plan, records, &modes, &outcomes))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn markdown(plan: &Plan, records: u64, modes: &[CopierMode], outcomes: &[Vec<CopierOutcome>]) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    let _ = writeln!(text, "## once bench --copier: consume-transform-produce, transactional vs not\n");
    let _ = writeln!(
        text,
        "{records} records of {} B over {} partitions; time from the copier's start until a read_committed \
         consumer has every record; median of {} interleaved runs (min–max). Ratio: median of the per-run \
         ratios to the non-transactional copier of the same run.\n",
        plan.args.record_bytes, plan.args.partitions, plan.runs
    );
    let _ = writeln!(text, "| copier | records/s | min–max | ratio to non-transactional |");
    let _ = writeln!(text, "|---|---|---|---|");
    for (slot, mode) in modes.iter().enumerate() {
        let mut rates: Vec<f64> = outcomes[slot].iter().map(CopierOutcome::records_per_second).collect();
        let (low, high) = rates.iter().fold((f64::MAX, 0f64), |(low, high), rate| (low.min(*rate), high.max(*rate)));
        let mut ratios: Vec<f64> = outcomes[slot]
            .iter()
            .zip(&outcomes[0])
            .map(|(outcome, baseline)| outcome.records_per_second() / baseline.records_per_second())
            .collect();
        let _ = writeln!(
            text,
            "| {} | {:.0} | {:.0}–{:.0} | {:.2} |",
            mode.label(),
            median(&mut rates),
            low,
            high,
            median(&mut ratios)
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
