//! The processor processes of the `dedup-processor` workload: `once dedup` (or `--processor-cmd`) in
//! the run's consumer group, each run by `sh -c "exec …"` so that its pid is the processor's own,
//! with its output in its own log file. The `client-kill` and `client-pause` faults act on them on
//! the nemesis's clock ([`ProcessorFaults`]); every start, kill, pause, resume and exit is recorded
//! with its time.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::dedup_processor::history::{Pause, ProcessorEnd, ProcessorId, ProcessorRun};
use crate::history::FaultEvent;
use crate::nemesis::{elapsed_ms, ClientNemesis};
use crate::progress::Stats;
use crate::rng::Rng;

/// A client fault every this many milliseconds (a uniform draw per fault).
const CLIENT_FAULT_INTERVAL_MS: (u64, u64) = (1_500, 4_000);
/// How long a paused processor stays stopped: some pauses end within its session timeout
/// ([`SESSION_TIMEOUT_MS`]), the longer ones after the group has moved its partitions, so that it
/// wakes as a zombie with a transaction the broker may already have aborted
/// ([`TRANSACTION_TIMEOUT_MS`]).
const PAUSE_MS: (u64, u64) = (1_000, 9_000);
/// `session.timeout.ms` of every processor's consumer: a killed or paused member's partitions move
/// after this long (librdkafka's 45-s default would stall a short run).
pub const SESSION_TIMEOUT_MS: u64 = 6_000;
/// `--transaction-timeout-ms` of every processor: a killed processor's open transaction is aborted
/// by the broker after this long (each has a transactional id of its own, so no successor fences it).
pub const TRANSACTION_TIMEOUT_MS: u64 = 4_000;
// The longest pauses outlast a paused processor's session and transaction (it wakes a zombie); the
// shortest end within its session.
const _: () = assert!(PAUSE_MS.0 < SESSION_TIMEOUT_MS && SESSION_TIMEOUT_MS < PAUSE_MS.1);
const _: () = assert!(TRANSACTION_TIMEOUT_MS < PAUSE_MS.1);
/// Seed stream of the processor-fault schedule, apart from the broker, proxy and producer schedules.
const CLIENT_FAULT_STREAM: u64 = 8_000;
/// A processor that exits by itself is replaced no sooner than this after the last start.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// What a processor's log says for each partition index it restores from the changelog.
const RESTORED: &str = "ids restored from";
/// What a processor's log says for each transaction it aborts.
const ABORTED: &str = "aborting the transaction";

/// How to start a processor.
#[derive(Debug, Clone)]
pub struct ProcessorSettings {
    /// The command the processor flags are appended to, e.g. `/usr/bin/once dedup`.
    pub command: String,
    /// Where processors connect: the proxy when there is one.
    pub bootstrap: String,
    pub input: String,
    pub output: String,
    pub group: String,
    /// `--source` of every processor: `header:once-check-id`, unless the run is broken on purpose.
    pub source: String,
    /// How many run at a time.
    pub count: u32,
    pub seed: u64,
    /// Where each processor's output goes: `once-check-processor-SEED-ID.log` in this directory.
    pub log_dir: PathBuf,
}

/// The default `--processor-cmd`: this executable's `dedup` subcommand.
pub fn default_command() -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding the current executable for --processor-cmd")?;
    Ok(format!("{} dedup", quoted(&exe.to_string_lossy())))
}

/// `text` in single quotes for `sh`.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The flags every processor gets after the command (and `--exit-when-idle-ms` for a final one).
pub fn processor_flags(settings: &ProcessorSettings) -> String {
    format!(
        "--bootstrap {} --from {} --to {} --group {} --source {} --transaction-timeout-ms {TRANSACTION_TIMEOUT_MS} \
         -X session.timeout.ms={SESSION_TIMEOUT_MS} -X heartbeat.interval.ms=1000",
        settings.bootstrap,
        settings.input,
        settings.output,
        settings.group,
        quoted(&settings.source)
    )
}

/// Every processor of a run: the processes still running and the record of all of them.
pub struct Processors {
    settings: ProcessorSettings,
    start: Instant,
    stats: Arc<Stats>,
    records: Vec<ProcessorRun>,
    /// Running processes by processor id, oldest first.
    running: Vec<(ProcessorId, Child)>,
    last_spawn: Option<Instant>,
    events: Vec<FaultEvent>,
}

impl Processors {
    pub fn new(settings: ProcessorSettings, start: Instant, stats: Arc<Stats>) -> Processors {
        let (records, running, events) = (Vec::new(), Vec::new(), Vec::new());
        Processors { settings, start, stats, records, running, last_spawn: None, events }
    }

    fn note(&mut self, kind: String) {
        self.events.push(FaultEvent { time_ms: elapsed_ms(self.start), kind });
    }

    /// Starts one more processor; a final one gets `--exit-when-idle-ms`.
    pub fn spawn(&mut self, exit_when_idle_ms: Option<u64>) -> anyhow::Result<ProcessorId> {
        let id = ProcessorId::try_from(self.records.len()).context("too many processors")?;
        let settings = &self.settings;
        let log = settings.log_dir.join(format!("once-check-processor-{}-{id}.log", settings.seed));
        let mut command = format!("exec {} {}", settings.command, processor_flags(settings));
        if let Some(idle) = exit_when_idle_ms {
            command.push_str(&format!(" --exit-when-idle-ms {idle}"));
        }
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating the processor log {}", log.display()))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting a processor: {command}"))?;
        self.records.push(ProcessorRun {
            id,
            pid: child.id(),
            started_ms: elapsed_ms(self.start),
            pauses: Vec::new(),
            ended_ms: None,
            end: ProcessorEnd::Running,
            last: exit_when_idle_ms.is_some(),
            restores: 0,
            aborts: 0,
            log: log.display().to_string(),
        });
        self.running.push((id, child));
        self.last_spawn = Some(Instant::now());
        let last = if exit_when_idle_ms.is_some() { " (final)" } else { "" };
        self.note(format!("processor-start {id}{last}"));
        Ok(id)
    }

    /// Starts processors until `--processors` run; one that exited by itself is replaced after
    /// [`RESTART_BACKOFF`], so one that fails at once does not spin.
    pub fn keep_running(&mut self) -> anyhow::Result<()> {
        self.reap();
        let backing_off = self.last_spawn.is_some_and(|at| at.elapsed() < RESTART_BACKOFF);
        let missing = (self.settings.count as usize).saturating_sub(self.running.len());
        if !backing_off {
            for _ in 0..missing {
                self.spawn(None)?;
            }
        }
        Ok(())
    }

    fn is_paused(&self, id: ProcessorId) -> bool {
        self.records[id as usize].pauses.last().is_some_and(|pause| pause.resumed_ms.is_none())
    }

    /// Running processors that are not paused, oldest first.
    pub fn active(&self) -> Vec<ProcessorId> {
        self.running.iter().map(|(id, _)| *id).filter(|&id| !self.is_paused(id)).collect()
    }

    /// Paused processors, oldest first.
    pub fn paused(&self) -> Vec<ProcessorId> {
        self.running.iter().map(|(id, _)| *id).filter(|&id| self.is_paused(id)).collect()
    }

    fn signal(&self, id: ProcessorId, signal: &str) -> anyhow::Result<()> {
        let pid = self.records[id as usize].pid;
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
        let status = status.with_context(|| format!("kill -{signal} {pid}"))?;
        // The processor may have exited since it was last reaped; the next reap records that.
        if !status.success() {
            eprintln!("once check: kill -{signal} of processor {id} (pid {pid}) failed: {status}");
        }
        Ok(())
    }

    fn ended(&mut self, id: ProcessorId, end: ProcessorEnd) {
        let ended_ms = elapsed_ms(self.start);
        let record = &mut self.records[id as usize];
        record.ended_ms = Some(ended_ms);
        record.end = end;
    }

    /// SIGKILL (a stopped process dies too), recorded with `end`: no chance to leave the group or
    /// end its transaction.
    pub fn kill(&mut self, id: ProcessorId, end: ProcessorEnd) {
        let Some(at) = self.running.iter().position(|(running, _)| *running == id) else { return };
        let (_, mut child) = self.running.remove(at);
        let _ = child.kill();
        let _ = child.wait();
        if end == ProcessorEnd::Killed {
            self.stats.processor_kills.fetch_add(1, Ordering::Relaxed);
        }
        let kind = if end == ProcessorEnd::Killed { "processor-kill" } else { "processor-stop" };
        self.ended(id, end);
        self.note(format!("{kind} {id}"));
    }

    /// SIGSTOP: the processor freezes where it is, its connections and transaction open.
    pub fn pause(&mut self, id: ProcessorId) -> anyhow::Result<()> {
        self.signal(id, "STOP")?;
        self.stats.processor_pauses.fetch_add(1, Ordering::Relaxed);
        let paused_ms = elapsed_ms(self.start);
        self.records[id as usize].pauses.push(Pause { paused_ms, resumed_ms: None });
        self.note(format!("processor-pause {id}"));
        Ok(())
    }

    /// SIGCONT: a paused processor carries on with the transaction it held, unaware of what the
    /// group and the broker did meanwhile.
    pub fn resume(&mut self, id: ProcessorId) -> anyhow::Result<()> {
        if !self.is_paused(id) {
            return Ok(());
        }
        self.signal(id, "CONT")?;
        let resumed_ms = elapsed_ms(self.start);
        if let Some(pause) = self.records[id as usize].pauses.last_mut() {
            pause.resumed_ms = Some(resumed_ms);
        }
        self.note(format!("processor-resume {id}"));
        Ok(())
    }

    /// Resumes every paused processor.
    pub fn resume_all(&mut self) -> anyhow::Result<()> {
        for id in self.paused() {
            self.resume(id)?;
        }
        Ok(())
    }

    /// Records every processor that has exited by itself since the last call.
    pub fn reap(&mut self) {
        let mut index = 0;
        while index < self.running.len() {
            let Some(status) = self.running[index].1.try_wait().ok().flatten() else {
                index += 1;
                continue;
            };
            let (id, _) = self.running.remove(index);
            let last_line = last_line(&self.records[id as usize].log);
            let fenced = last_line.to_lowercase().contains("fenced");
            self.ended(id, ProcessorEnd::Exited { code: status.code(), fenced, last_line });
            let fenced = if fenced { ", fenced" } else { "" };
            self.note(format!("processor-exit {id} ({status}{fenced})"));
        }
    }

    /// Waits up to `timeout` for processor `id` to exit by itself; false if it is still running.
    pub fn wait_for(&mut self, id: ProcessorId, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.reap();
            if !self.running.iter().any(|(running, _)| *running == id) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops every running processor (SIGKILL), recorded as the checker's doing.
    pub fn stop_all(&mut self) {
        self.reap();
        for id in self.running.iter().map(|(id, _)| *id).collect::<Vec<_>>() {
            self.kill(id, ProcessorEnd::Stopped);
        }
    }

    /// The record of every processor (restores and aborts counted from their logs) and the events.
    pub fn into_history(mut self) -> (Vec<ProcessorRun>, Vec<FaultEvent>) {
        self.stop_all();
        for record in &mut self.records {
            let text = std::fs::read_to_string(&record.log).unwrap_or_default();
            record.restores = text.lines().filter(|line| line.contains(RESTORED)).count() as u64;
            record.aborts = text.lines().filter(|line| line.contains(ABORTED)).count() as u64;
        }
        (std::mem::take(&mut self.records), std::mem::take(&mut self.events))
    }
}

impl Drop for Processors {
    fn drop(&mut self) {
        for (_, child) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last non-empty line of a log file.
fn last_line(path: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or_default().to_string()
}

/// The `client-kill` and `client-pause` faults on processors, on the nemesis's clock: every
/// 1.5–4 s (seeded) one active processor, picked by the seed, is killed with SIGKILL and a new one
/// starts at once (the group rebalances when it joins and again when the dead member's session
/// ends), or stopped with SIGSTOP (never the last active one) and let go 1–9 s later. Processors
/// that exit by themselves are replaced.
pub struct ProcessorFaults<'a> {
    processors: &'a mut Processors,
    kill: bool,
    pause: bool,
    rng: Rng,
    next_fault: Instant,
    resumes: Vec<(ProcessorId, Instant)>,
}

impl<'a> ProcessorFaults<'a> {
    pub fn new(processors: &'a mut Processors, (kill, pause): (bool, bool), seed: u64) -> ProcessorFaults<'a> {
        let mut rng = Rng::new(seed).fork(CLIENT_FAULT_STREAM);
        let next_fault = Instant::now() + Duration::from_millis(rng.between(1_000, CLIENT_FAULT_INTERVAL_MS.1));
        ProcessorFaults { processors, kill, pause, rng, next_fault, resumes: Vec::new() }
    }

    /// After the schedule: lets every paused processor go at its time, so that a long pause still
    /// outlasts the session and makes a zombie (processors that die meanwhile are replaced).
    pub fn heal(&mut self) -> anyhow::Result<()> {
        while !self.resumes.is_empty() {
            self.resume_due(Instant::now())?;
            std::thread::sleep(Duration::from_millis(10));
        }
        self.processors.resume_all()
    }

    /// Replaces processors that died and resumes the paused ones whose time has come.
    fn resume_due(&mut self, now: Instant) -> anyhow::Result<()> {
        self.processors.keep_running()?;
        let due: Vec<ProcessorId> = self.resumes.iter().filter(|(_, at)| now >= *at).map(|(id, _)| *id).collect();
        self.resumes.retain(|(_, at)| now < *at);
        for id in due {
            self.processors.resume(id)?;
        }
        Ok(())
    }

    fn strike(&mut self) -> anyhow::Result<()> {
        // Draw every decision each time, so the schedule does not depend on which faults are on.
        let interval = self.rng.between(CLIENT_FAULT_INTERVAL_MS.0, CLIENT_FAULT_INTERVAL_MS.1);
        let (coin, pause_ms, pick) =
            (self.rng.chance(0.5), self.rng.between(PAUSE_MS.0, PAUSE_MS.1), self.rng.next_u64());
        let now = Instant::now();
        self.next_fault = now + Duration::from_millis(interval);
        let active = self.processors.active();
        let Some(&victim) = active.get((pick % active.len().max(1) as u64) as usize) else { return Ok(()) };
        let can_pause = self.pause && active.len() > 1;
        if can_pause && (coin || !self.kill) {
            self.processors.pause(victim)?;
            self.resumes.push((victim, now + Duration::from_millis(pause_ms)));
        } else if self.kill {
            self.processors.kill(victim, ProcessorEnd::Killed);
            self.processors.spawn(None)?;
        }
        Ok(())
    }
}

impl ClientNemesis for ProcessorFaults<'_> {
    fn tick(&mut self, now: Instant) -> anyhow::Result<()> {
        self.resume_due(now)?;
        if now >= self.next_fault && (self.kill || self.pause) {
            self.strike()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_processor_reads_the_run_s_ids_from_the_header_in_one_group_with_short_timeouts() {
        let settings = ProcessorSettings {
            command: "'/bin/once' dedup".into(),
            bootstrap: "127.0.0.1:1".into(),
            input: "run-in".into(),
            output: "run-out".into(),
            group: "run-dedup".into(),
            source: "header:once-check-id".into(),
            count: 3,
            seed: 1,
            log_dir: PathBuf::from("/tmp"),
        };
        assert_eq!(
            processor_flags(&settings),
            "--bootstrap 127.0.0.1:1 --from run-in --to run-out --group run-dedup --source 'header:once-check-id' \
             --transaction-timeout-ms 4000 -X session.timeout.ms=6000 -X heartbeat.interval.ms=1000"
        );
    }
}
