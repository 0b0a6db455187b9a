//! The copier processes of the `txn` workload: `once copy` (or `--copier-cmd`) with the run's one
//! transactional id and consumer group, each run by `sh -c "exec …"` so that its pid is the copier's
//! own, with its output in its own log file and its transactions traced (`--trace`) in its own trace
//! file, read back at the end ([`parse_trace`]). The `client-kill` and `client-pause` faults act on them
//! on the nemesis's clock ([`CopierFaults`]); every start, kill, pause, resume and exit is recorded
//! with its time.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::history::FaultEvent;
use crate::nemesis::{elapsed_ms, ClientNemesis};
use crate::progress::Stats;
use crate::rng::Rng;
use crate::txn::history::{Copier, CopierEnd, CopierId, TracedTransaction};

/// Length of one copier transaction.
const COMMIT_INTERVAL_MS: u64 = 100;
/// Fraction of transactions a copier aborts on purpose: aborted records the read_committed consumer
/// must never see.
const ABORT_PROBABILITY: f64 = 0.2;
/// A client fault every this many milliseconds (a uniform draw per fault).
const CLIENT_FAULT_INTERVAL_MS: (u64, u64) = (1500, 4000);
/// How long a paused copier stays stopped before it is let go as a zombie.
const PAUSE_MS: (u64, u64) = (1000, 4000);
/// Seed stream of the client-fault schedule, apart from the broker and proxy schedule.
const CLIENT_FAULT_STREAM: u64 = 3_000;

/// How to start a copier.
#[derive(Debug, Clone)]
pub struct CopierSettings {
    /// The command the copy flags are appended to, e.g. `/usr/bin/once copy`.
    pub command: String,
    /// Where copiers connect: the proxy when there is one.
    pub bootstrap: String,
    pub input: String,
    pub output: String,
    pub group: String,
    pub transactional_id: String,
    pub seed: u64,
    /// Where each copier's log goes: `once-check-copier-SEED-ID.log` in this directory; its trace goes
    /// beside it, `once-check-copier-SEED-ID.trace.jsonl`.
    pub log_dir: PathBuf,
}

/// The default `--copier-cmd`: this executable's `copy` subcommand.
pub fn default_command() -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding the current executable for --copier-cmd")?;
    let exe = exe.to_string_lossy().replace('\'', r"'\''");
    Ok(format!("'{exe}' copy"))
}

/// Every copier of a run: the processes still running and the record of all of them.
pub struct Copiers {
    settings: CopierSettings,
    start: Instant,
    stats: Arc<Stats>,
    records: Vec<Copier>,
    /// Each copier's `--trace` file, by copier id.
    traces: Vec<PathBuf>,
    /// Running processes by copier id, oldest first.
    running: Vec<(CopierId, Child)>,
    events: Vec<FaultEvent>,
}

impl Copiers {
    pub fn new(settings: CopierSettings, start: Instant, stats: Arc<Stats>) -> Copiers {
        Copiers {
            settings,
            start,
            stats,
            records: Vec::new(),
            traces: Vec::new(),
            running: Vec::new(),
            events: Vec::new(),
        }
    }

    fn note(&mut self, kind: String) {
        self.events.push(FaultEvent { time_ms: elapsed_ms(self.start), kind });
    }

    fn record(&mut self, id: CopierId) -> &mut Copier {
        &mut self.records[id as usize]
    }

    /// Starts a copier; the final one gets `--exit-when-idle-ms`.
    pub fn spawn(&mut self, exit_when_idle_ms: Option<u64>) -> anyhow::Result<CopierId> {
        let id = CopierId::try_from(self.records.len()).context("too many copiers")?;
        let settings = &self.settings;
        let seed = Rng::new(settings.seed).fork(2_000 + u64::from(id)).next_u64() >> 1;
        let log = settings.log_dir.join(format!("once-check-copier-{}-{id}.log", settings.seed));
        let trace = settings.log_dir.join(format!("once-check-copier-{}-{id}.trace.jsonl", settings.seed));
        // The copier appends: start from an empty file, not an earlier run's with the same seed.
        std::fs::File::create(&trace).with_context(|| format!("creating the copier trace {}", trace.display()))?;
        let mut command = format!(
            "exec {} --bootstrap {} --from {} --to {} --group {} --transactional-id {} --commit-interval-ms \
             {COMMIT_INTERVAL_MS} --abort-probability {ABORT_PROBABILITY} --seed {seed} --trace '{}'",
            settings.command,
            settings.bootstrap,
            settings.input,
            settings.output,
            settings.group,
            settings.transactional_id,
            trace.display().to_string().replace('\'', r"'\''")
        );
        if let Some(idle) = exit_when_idle_ms {
            command.push_str(&format!(" --exit-when-idle-ms {idle}"));
        }
        let file = std::fs::File::create(&log).with_context(|| format!("creating the copier log {}", log.display()))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting a copier: {command}"))?;
        let started_ms = elapsed_ms(self.start);
        self.records.push(Copier {
            id,
            pid: child.id(),
            seed,
            started_ms,
            paused_ms: None,
            resumed_ms: None,
            ended_ms: None,
            end: CopierEnd::Running,
            last: exit_when_idle_ms.is_some(),
            log: log.display().to_string(),
        });
        self.traces.push(trace);
        self.running.push((id, child));
        self.note(format!("copier-start {id}{}", if exit_when_idle_ms.is_some() { " (final)" } else { "" }));
        Ok(id)
    }

    /// The newest running copier that is not paused: the one that should hold the transactional id.
    pub fn active(&self) -> Option<CopierId> {
        self.running.iter().rev().map(|(id, _)| *id).find(|&id| !self.is_paused(id))
    }

    fn is_paused(&self, id: CopierId) -> bool {
        let record = &self.records[id as usize];
        record.paused_ms.is_some() && record.resumed_ms.is_none()
    }

    /// The copier paused and not yet resumed, if any.
    pub fn paused(&self) -> Option<CopierId> {
        self.running.iter().map(|(id, _)| *id).find(|&id| self.is_paused(id))
    }

    /// Ids of the running copiers, oldest first.
    pub fn running(&self) -> Vec<CopierId> {
        self.running.iter().map(|(id, _)| *id).collect()
    }

    pub fn has_ended(&self, id: CopierId) -> bool {
        !self.running.iter().any(|(running, _)| *running == id)
    }

    /// SIGKILL (a stopped process dies too); `end` says whether a fault or the checker did it.
    pub fn kill(&mut self, id: CopierId, end: CopierEnd) {
        let Some(at) = self.running.iter().position(|(running, _)| *running == id) else { return };
        let (_, mut child) = self.running.remove(at);
        let _ = child.kill();
        let _ = child.wait();
        let kind = if end == CopierEnd::Killed { "copier-kill" } else { "copier-stop" };
        if end == CopierEnd::Killed {
            self.stats.copier_kills.fetch_add(1, Ordering::Relaxed);
        }
        let ended_ms = elapsed_ms(self.start);
        let record = self.record(id);
        record.ended_ms = Some(ended_ms);
        record.end = end;
        self.note(format!("{kind} {id}"));
    }

    fn signal(&self, id: CopierId, signal: &str) -> anyhow::Result<()> {
        let pid = self.records[id as usize].pid;
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
        let status = status.with_context(|| format!("kill -{signal} {pid}"))?;
        // The copier may have exited since it was last reaped; the next reap records that.
        if !status.success() {
            eprintln!("once check: kill -{signal} of copier {id} (pid {pid}) failed: {status}");
        }
        Ok(())
    }

    /// SIGSTOP: the copier freezes mid-step, its connections open, as a stalled process would.
    pub fn pause(&mut self, id: CopierId) -> anyhow::Result<()> {
        self.signal(id, "STOP")?;
        self.stats.copier_pauses.fetch_add(1, Ordering::Relaxed);
        let now = elapsed_ms(self.start);
        self.record(id).paused_ms = Some(now);
        self.note(format!("copier-pause {id}"));
        Ok(())
    }

    /// SIGCONT: a paused copier carries on where it stopped, unaware that a successor fenced it.
    pub fn resume(&mut self, id: CopierId) -> anyhow::Result<()> {
        self.signal(id, "CONT")?;
        let now = elapsed_ms(self.start);
        self.record(id).resumed_ms = Some(now);
        self.note(format!("copier-resume {id}"));
        Ok(())
    }

    /// Resumes every paused copier.
    pub fn resume_all(&mut self) -> anyhow::Result<()> {
        while let Some(id) = self.paused() {
            self.resume(id)?;
        }
        Ok(())
    }

    /// Records every copier that has exited by itself since the last call.
    pub fn reap(&mut self) {
        let mut index = 0;
        while index < self.running.len() {
            let exited = self.running[index].1.try_wait().ok().flatten();
            let Some(status) = exited else {
                index += 1;
                continue;
            };
            let (id, _) = self.running.remove(index);
            let text = std::fs::read_to_string(&self.records[id as usize].log).unwrap_or_default();
            let fenced = text.contains("fenced");
            let last_line = text.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or_default().to_string();
            if fenced {
                self.stats.fenced.fetch_add(1, Ordering::Relaxed);
            }
            let ended_ms = elapsed_ms(self.start);
            let record = self.record(id);
            record.ended_ms = Some(ended_ms);
            record.end = CopierEnd::Exited { code: status.code(), fenced, last_line };
            self.note(format!("copier-exit {id} ({status}{})", if fenced { ", fenced" } else { "" }));
        }
    }

    /// Waits up to `timeout` for copier `id` to exit by itself; false if it is still running.
    pub fn wait_for(&mut self, id: CopierId, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.reap();
            if self.has_ended(id) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops every running copier (SIGKILL), recorded as the checker's doing.
    pub fn stop_all(&mut self) {
        self.reap();
        for id in self.running() {
            self.kill(id, CopierEnd::Stopped);
        }
    }

    /// The record of every copier, the events in time order, and every traced transaction.
    pub fn into_history(mut self) -> (Vec<Copier>, Vec<FaultEvent>, Vec<TracedTransaction>) {
        self.stop_all();
        let mut transactions = Vec::new();
        for (id, path) in self.traces.iter().enumerate() {
            // A copier given by --copier-cmd may not trace: its transactions are then not judged.
            let text = std::fs::read_to_string(path).unwrap_or_default();
            transactions.extend(parse_trace(CopierId::try_from(id).unwrap_or(CopierId::MAX), &text));
        }
        (std::mem::take(&mut self.records), std::mem::take(&mut self.events), transactions)
    }
}

impl Drop for Copiers {
    fn drop(&mut self) {
        for (_, child) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One line of a `once copy --trace` file.
#[derive(serde::Deserialize)]
struct TraceLine {
    transaction: u64,
    producer: u32,
    event: String,
    unix_ms: u64,
    #[serde(default)]
    input: Vec<(i32, i64, i64)>,
    error: Option<String>,
}

/// The transactions of copier `copier`'s trace, in the order they began. Lines that do not parse (a
/// copier killed mid-write leaves a partial last line) are skipped.
pub fn parse_trace(copier: CopierId, text: &str) -> Vec<TracedTransaction> {
    let mut transactions: Vec<TracedTransaction> = Vec::new();
    for line in text.lines() {
        let Ok(line) = serde_json::from_str::<TraceLine>(line) else { continue };
        let same = transactions.last().is_some_and(|last| last.transaction == line.transaction);
        if !same {
            transactions.push(TracedTransaction {
                copier,
                transaction: line.transaction,
                producer: line.producer,
                commit_unix_ms: None,
                abort_unix_ms: None,
                outcome: None,
                error: None,
                input: Vec::new(),
            });
        }
        let Some(transaction) = transactions.last_mut() else { continue };
        match line.event.as_str() {
            "commit" | "abort" => {
                let asked = if line.event == "commit" {
                    &mut transaction.commit_unix_ms
                } else {
                    &mut transaction.abort_unix_ms
                };
                asked.get_or_insert(line.unix_ms);
                if transaction.input.is_empty() {
                    transaction.input = line.input;
                }
            }
            outcome => {
                transaction.outcome = Some(outcome.to_string());
                transaction.error = line.error.or(transaction.error.take());
            }
        }
    }
    transactions
}

/// The `client-kill` and `client-pause` faults, on the nemesis's clock: every 1.5–4 s (seeded) the
/// active copier is killed with SIGKILL, or stopped with SIGSTOP (at most one paused at a time) and
/// resumed 1–4 s later; either way a successor with the same transactional id starts at once. A
/// copier that exits by itself (fenced by a resumed zombie that initialised after it, say) is
/// replaced if no other copier is left running.
pub struct CopierFaults<'a> {
    copiers: &'a mut Copiers,
    kill: bool,
    pause: bool,
    rng: Rng,
    next_fault: Instant,
    /// The paused copier and when to resume it.
    resume: Option<(CopierId, Instant)>,
}

impl<'a> CopierFaults<'a> {
    pub fn new(copiers: &'a mut Copiers, kill: bool, pause: bool, seed: u64) -> CopierFaults<'a> {
        let mut rng = Rng::new(seed).fork(CLIENT_FAULT_STREAM);
        let next_fault = Instant::now() + Duration::from_millis(rng.between(0, CLIENT_FAULT_INTERVAL_MS.1));
        CopierFaults { copiers, kill, pause, rng, next_fault, resume: None }
    }
}

impl ClientNemesis for CopierFaults<'_> {
    fn tick(&mut self, now: Instant) -> anyhow::Result<()> {
        self.copiers.reap();
        if let Some((id, at)) = self.resume {
            if now >= at {
                self.copiers.resume(id)?;
                self.resume = None;
            }
        }
        if self.copiers.active().is_none() {
            self.copiers.spawn(None)?;
        }
        if now < self.next_fault || !(self.kill || self.pause) {
            return Ok(());
        }
        // Draw every decision each time, so the schedule does not depend on which faults are on.
        let interval = self.rng.between(CLIENT_FAULT_INTERVAL_MS.0, CLIENT_FAULT_INTERVAL_MS.1);
        let (coin, pause_ms) = (self.rng.chance(0.5), self.rng.between(PAUSE_MS.0, PAUSE_MS.1));
        self.next_fault = now + Duration::from_millis(interval);
        let Some(active) = self.copiers.active() else { return Ok(()) };
        let pause = self.pause && self.resume.is_none() && (coin || !self.kill);
        if pause {
            self.copiers.pause(active)?;
            self.resume = Some((active, now + Duration::from_millis(pause_ms)));
        } else if self.kill {
            self.copiers.kill(active, CopierEnd::Killed);
        } else {
            return Ok(());
        }
        self.copiers.spawn(None)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_trace;

    #[test]
    fn a_trace_gives_each_transaction_its_times_input_and_outcome_and_skips_a_partial_last_line() {
        let text = concat!(
            r#"{"event":"commit","input":[[0,10,12],[2,5,5]],"transaction":0,"producer":0,"unix_ms":1000}"#,
            "\n",
            r#"{"event":"committed","transaction":0,"producer":0,"unix_ms":1004}"#,
            "\n",
            r#"{"event":"abort","input":[[0,13,14]],"transaction":1,"producer":0,"unix_ms":1100}"#,
            "\n",
            r#"{"event":"aborted","transaction":1,"producer":0,"unix_ms":1103}"#,
            "\n",
            r#"{"event":"commit","input":[[0,13,15]],"transaction":2,"producer":0,"unix_ms":1200}"#,
            "\n",
            r#"{"event":"committ"#,
        );
        let traced = parse_trace(4, text);
        assert_eq!(traced.len(), 3, "{traced:?}");
        assert_eq!(traced[0].commit_unix_ms, Some(1000));
        assert_eq!(traced[0].input, vec![(0, 10, 12), (2, 5, 5)]);
        assert_eq!(traced[0].outcome.as_deref(), Some("committed"));
        assert_eq!((traced[1].commit_unix_ms, traced[1].abort_unix_ms), (None, Some(1100)));
        assert_eq!(traced[1].outcome.as_deref(), Some("aborted"));
        assert_eq!(traced[2].commit_unix_ms, Some(1200));
        assert_eq!(traced[2].outcome, None, "killed before it knew: the partial line is skipped");
        assert!(traced.iter().all(|transaction| transaction.copier == 4));
    }
}
