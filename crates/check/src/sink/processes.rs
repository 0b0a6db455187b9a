//! The sink processes of the `sink` workload: `once sink` (or `--sink-cmd`) in the run's consumer
//! group, each run by `sh -c "exec …"` so that its pid is the sink's own, with its output in its own
//! log file. The `client-kill` and `client-pause` faults act on them on the nemesis's clock
//! ([`SinkFaults`]); every start, kill, pause, resume and exit is recorded with its time.

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
use crate::sink::database::{effect_statement, Database};
use crate::sink::history::{Pause, SinkEnd, SinkId, SinkProcess};

/// A client fault every this many milliseconds (a uniform draw per fault).
const CLIENT_FAULT_INTERVAL_MS: (u64, u64) = (4_000, 9_000);
/// How long a paused sink stays stopped: past `once sink`'s 10-s session timeout, so the group moves
/// its partitions before it is let go as a zombie; under PostgreSQL's 30-s abort of a transaction
/// left idle, so a zombie caught mid-batch still holds its transaction when it wakes.
const PAUSE_MS: (u64, u64) = (13_000, 16_000);
/// How long the database is stalled before the fault strikes: every sink that has records reaches
/// its database transaction in that time and waits there, its batch in hand.
const STALL_MS: u64 = 700;
/// Seed stream of the sink-fault schedule, apart from the broker, proxy and producer schedules.
const CLIENT_FAULT_STREAM: u64 = 7_000;
/// A sink that exits by itself is replaced no sooner than this after the last start.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// How long a sink may take to finish its batch and exit after SIGTERM.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(30);
/// What a sink's log says when the fence refuses a batch.
const REFUSED: &str = "batch refused";

/// How to start a sink.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// The command the sink flags are appended to, e.g. `/usr/bin/once sink`.
    pub command: String,
    /// Where sinks connect: the proxy when there is one.
    pub bootstrap: String,
    pub topic: String,
    pub group: String,
    pub database: String,
    pub batch_records: u32,
    /// `--at-least-once after|before`: the sink broken on purpose.
    pub at_least_once: Option<&'static str>,
    /// How many run at a time.
    pub count: u32,
    pub seed: u64,
    /// Where each sink's output goes: `once-check-sink-SEED-ID.log` in this directory.
    pub log_dir: PathBuf,
}

/// The default `--sink-cmd`: this executable's `sink` subcommand.
pub fn default_command() -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding the current executable for --sink-cmd")?;
    Ok(format!("{} sink", quoted(&exe.to_string_lossy())))
}

/// `text` in single quotes for `sh`.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Every sink of a run: the processes still running and the record of all of them.
pub struct Sinks {
    settings: SinkSettings,
    start: Instant,
    stats: Arc<Stats>,
    records: Vec<SinkProcess>,
    /// Running processes by sink id, oldest first.
    running: Vec<(SinkId, Child)>,
    last_spawn: Option<Instant>,
    events: Vec<FaultEvent>,
}

impl Sinks {
    pub fn new(settings: SinkSettings, start: Instant, stats: Arc<Stats>) -> Sinks {
        Sinks { settings, start, stats, records: Vec::new(), running: Vec::new(), last_spawn: None, events: Vec::new() }
    }

    fn note(&mut self, kind: String) {
        self.events.push(FaultEvent { time_ms: elapsed_ms(self.start), kind });
    }

    /// Starts one more sink.
    pub fn spawn(&mut self) -> anyhow::Result<SinkId> {
        let id = SinkId::try_from(self.records.len()).context("too many sinks")?;
        let settings = &self.settings;
        let log = settings.log_dir.join(format!("once-check-sink-{}-{id}.log", settings.seed));
        let mut command = format!(
            "exec {} --bootstrap {} --group {} --topic {} --database {} --sql {} --batch-records {}",
            settings.command,
            settings.bootstrap,
            settings.group,
            settings.topic,
            quoted(&settings.database),
            quoted(&effect_statement(id)),
            settings.batch_records
        );
        if let Some(order) = settings.at_least_once {
            command.push_str(&format!(" --at-least-once {order}"));
        }
        let file = std::fs::File::create(&log).with_context(|| format!("creating the sink log {}", log.display()))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .env("ONCE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting a sink: {command}"))?;
        self.records.push(SinkProcess {
            id,
            pid: child.id(),
            started_ms: elapsed_ms(self.start),
            pauses: Vec::new(),
            ended_ms: None,
            end: SinkEnd::Running,
            refused_batches: 0,
            log: log.display().to_string(),
        });
        self.running.push((id, child));
        self.last_spawn = Some(Instant::now());
        self.note(format!("sink-start {id}"));
        Ok(id)
    }

    /// Starts sinks until `--sinks` run; a sink that exited by itself is replaced after
    /// [`RESTART_BACKOFF`], so one that fails at once does not spin.
    pub fn keep_running(&mut self) -> anyhow::Result<()> {
        self.reap();
        let backing_off = self.last_spawn.is_some_and(|at| at.elapsed() < RESTART_BACKOFF);
        let missing = (self.settings.count as usize).saturating_sub(self.running.len());
        if missing > 0 && !backing_off {
            for _ in 0..missing {
                self.spawn()?;
            }
        }
        Ok(())
    }

    fn is_paused(&self, id: SinkId) -> bool {
        self.records[id as usize].pauses.last().is_some_and(|pause| pause.resumed_ms.is_none())
    }

    /// Running sinks that are not paused, oldest first.
    pub fn active(&self) -> Vec<SinkId> {
        self.running.iter().map(|(id, _)| *id).filter(|&id| !self.is_paused(id)).collect()
    }

    /// Paused sinks, oldest first.
    pub fn paused(&self) -> Vec<SinkId> {
        self.running.iter().map(|(id, _)| *id).filter(|&id| self.is_paused(id)).collect()
    }

    /// How many sinks are meant to run at a time.
    pub fn count(&self) -> usize {
        self.settings.count as usize
    }

    fn signal(&self, id: SinkId, signal: &str) -> anyhow::Result<()> {
        let pid = self.records[id as usize].pid;
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
        let status = status.with_context(|| format!("kill -{signal} {pid}"))?;
        // The sink may have exited since it was last reaped; the next reap records that.
        if !status.success() {
            eprintln!("once check: kill -{signal} of sink {id} (pid {pid}) failed: {status}");
        }
        Ok(())
    }

    /// SIGKILL (a stopped process dies too), recorded with `end`.
    pub fn kill(&mut self, id: SinkId, end: SinkEnd) {
        let Some(at) = self.running.iter().position(|(running, _)| *running == id) else { return };
        let (_, mut child) = self.running.remove(at);
        let _ = child.kill();
        let _ = child.wait();
        if end == SinkEnd::Killed {
            self.stats.sink_kills.fetch_add(1, Ordering::Relaxed);
        }
        let kind = if end == SinkEnd::Killed { "sink-kill" } else { "sink-stop" };
        self.ended(id, end);
        self.note(format!("{kind} {id}"));
    }

    /// SIGSTOP: the sink freezes where it is, its connections open, as a stalled process would.
    pub fn pause(&mut self, id: SinkId) -> anyhow::Result<()> {
        self.signal(id, "STOP")?;
        self.stats.sink_pauses.fetch_add(1, Ordering::Relaxed);
        let paused_ms = elapsed_ms(self.start);
        self.records[id as usize].pauses.push(Pause { paused_ms, resumed_ms: None });
        self.note(format!("sink-pause {id}"));
        Ok(())
    }

    /// SIGCONT: a paused sink carries on with the batch it held, unaware that its partitions moved.
    pub fn resume(&mut self, id: SinkId) -> anyhow::Result<()> {
        if !self.is_paused(id) {
            return Ok(());
        }
        self.signal(id, "CONT")?;
        let resumed_ms = elapsed_ms(self.start);
        if let Some(pause) = self.records[id as usize].pauses.last_mut() {
            pause.resumed_ms = Some(resumed_ms);
        }
        self.note(format!("sink-resume {id}"));
        Ok(())
    }

    /// Resumes every paused sink.
    pub fn resume_all(&mut self) -> anyhow::Result<()> {
        for id in self.paused() {
            self.resume(id)?;
        }
        Ok(())
    }

    /// Takes every sink that has exited out of the running ones.
    fn take_exited(&mut self) -> Vec<(SinkId, std::process::ExitStatus)> {
        let mut exited = Vec::new();
        let mut index = 0;
        while index < self.running.len() {
            match self.running[index].1.try_wait().ok().flatten() {
                Some(status) => exited.push((self.running.remove(index).0, status)),
                None => index += 1,
            }
        }
        exited
    }

    /// Records how a sink that exited ended.
    fn ended(&mut self, id: SinkId, end: SinkEnd) {
        let ended_ms = elapsed_ms(self.start);
        let record = &mut self.records[id as usize];
        record.ended_ms = Some(ended_ms);
        record.end = end;
    }

    /// Records every sink that has exited by itself since the last call.
    pub fn reap(&mut self) {
        for (id, status) in self.take_exited() {
            let last_line = last_line(&self.records[id as usize].log);
            self.ended(id, SinkEnd::Exited { code: status.code(), last_line });
            self.note(format!("sink-exit {id} ({status})"));
        }
    }

    /// SIGTERM to every sink (paused ones are resumed first), then up to [`TERMINATE_TIMEOUT`] for
    /// them to finish their batch and exit; SIGKILL for those that do not.
    pub fn terminate_all(&mut self) -> anyhow::Result<()> {
        self.resume_all()?;
        self.reap();
        for (id, _) in &self.running {
            self.signal(*id, "TERM")?;
        }
        let deadline = Instant::now() + TERMINATE_TIMEOUT;
        while !self.running.is_empty() && Instant::now() < deadline {
            for (id, status) in self.take_exited() {
                self.ended(id, SinkEnd::Terminated { code: status.code() });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for id in self.running.iter().map(|(id, _)| *id).collect::<Vec<_>>() {
            eprintln!("once check: sink {id} did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM; killing it");
            self.kill(id, SinkEnd::Stopped);
        }
        Ok(())
    }

    /// The record of every sink (refused batches counted from their logs) and the events.
    pub fn into_history(mut self) -> (Vec<SinkProcess>, Vec<FaultEvent>) {
        for id in self.running.iter().map(|(id, _)| *id).collect::<Vec<_>>() {
            self.kill(id, SinkEnd::Stopped);
        }
        for record in &mut self.records {
            let text = std::fs::read_to_string(&record.log).unwrap_or_default();
            record.refused_batches = text.lines().filter(|line| line.contains(REFUSED)).count() as u64;
        }
        (std::mem::take(&mut self.records), std::mem::take(&mut self.events))
    }
}

impl Drop for Sinks {
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

/// What a client fault does once the database is stalled.
#[derive(Debug, Clone, Copy)]
enum Strike {
    /// SIGKILL, and a successor at once.
    Kill,
    /// SIGSTOP, SIGCONT after this long.
    Pause(Duration),
}

/// A fault under way: the database stalled (if it could be) until the strike.
#[derive(Debug, Clone, Copy)]
struct Stall {
    until: Instant,
    strike: Strike,
    /// The seeded pick of a victim when the database does not name one.
    pick: u64,
    /// Whether the checker holds the database's lock.
    locked: bool,
}

/// The `client-kill` and `client-pause` faults on sinks, on the nemesis's clock: every 4–9 s
/// (seeded) the database is stalled for [`STALL_MS`] — the checker takes the lock every effect
/// needs, so sinks with records wait inside their batch — and then one sink is struck: the one that
/// wrote the newest effect (it holds partitions and has been applying), else a seeded pick. It is
/// killed with SIGKILL and a successor starts at once, or stopped with SIGSTOP (never the last
/// running sink) and let go 13–16 s later, after its partitions moved, as a zombie with its batch in
/// hand. Then the stall ends. Sinks that exit by themselves are replaced.
pub struct SinkFaults<'a> {
    sinks: &'a mut Sinks,
    database: &'a mut Database,
    topic: String,
    kill: bool,
    pause: bool,
    rng: Rng,
    next_fault: Instant,
    stall: Option<Stall>,
    resumes: Vec<(SinkId, Instant)>,
    /// Stalls that got the database's lock.
    pub stalls: u64,
}

impl<'a> SinkFaults<'a> {
    pub fn new(
        sinks: &'a mut Sinks,
        database: &'a mut Database,
        topic: &str,
        (kill, pause): (bool, bool),
        seed: u64,
    ) -> SinkFaults<'a> {
        let mut rng = Rng::new(seed).fork(CLIENT_FAULT_STREAM);
        let next_fault = Instant::now() + Duration::from_millis(rng.between(2_000, CLIENT_FAULT_INTERVAL_MS.1));
        let topic = topic.to_string();
        SinkFaults { sinks, database, topic, kill, pause, rng, next_fault, stall: None, resumes: Vec::new(), stalls: 0 }
    }

    /// After the schedule: ends a stall still under way (without its strike), then lets every
    /// paused sink go at its time, so that each pause outlasts the session timeout and makes a
    /// zombie (sinks that die meanwhile are replaced).
    pub fn heal(&mut self) -> anyhow::Result<()> {
        if let Some(stall) = self.stall.take() {
            if stall.locked {
                self.database.end_stall()?;
            }
        }
        while !self.resumes.is_empty() {
            self.resume_due(Instant::now())?;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Replaces sinks that died and resumes the paused ones whose time has come.
    fn resume_due(&mut self, now: Instant) -> anyhow::Result<()> {
        self.sinks.keep_running()?;
        let due: Vec<SinkId> = self.resumes.iter().filter(|(_, at)| now >= *at).map(|(id, _)| *id).collect();
        self.resumes.retain(|(_, at)| now < *at);
        for id in due {
            self.sinks.resume(id)?;
        }
        Ok(())
    }

    /// Starts a fault: stalls the database and schedules the strike.
    fn begin(&mut self, now: Instant) -> anyhow::Result<()> {
        // Draw every decision each time, so the schedule does not depend on which faults are on.
        let interval = self.rng.between(CLIENT_FAULT_INTERVAL_MS.0, CLIENT_FAULT_INTERVAL_MS.1);
        let (coin, pause_ms, pick) =
            (self.rng.chance(0.5), self.rng.between(PAUSE_MS.0, PAUSE_MS.1), self.rng.next_u64());
        self.next_fault = now + Duration::from_millis(interval);
        let can_pause = self.pause && self.sinks.paused().len() + 1 < self.sinks.count();
        let strike = match (can_pause && (coin || !self.kill), self.kill) {
            (true, _) => Strike::Pause(Duration::from_millis(pause_ms)),
            (false, true) => Strike::Kill,
            (false, false) => return Ok(()),
        };
        let locked = match self.database.stall() {
            Ok(locked) => locked,
            Err(error) => {
                eprintln!("once check: could not stall the database ({error:#}); striking without a stall");
                false
            }
        };
        self.stalls += u64::from(locked);
        let until = now + Duration::from_millis(if locked { STALL_MS } else { 0 });
        self.stall = Some(Stall { until, strike, pick, locked });
        Ok(())
    }

    /// The fault's strike, then the end of its stall.
    fn strike(&mut self, stall: Stall, now: Instant) -> anyhow::Result<()> {
        let active = self.sinks.active();
        let named = match stall.locked {
            true => self.database.newest_effect_sink(&self.topic).unwrap_or(None),
            false => None,
        };
        let named = named.and_then(|sink| sink.parse::<SinkId>().ok()).filter(|id| active.contains(id));
        let victim = named.or_else(|| active.get((stall.pick % active.len().max(1) as u64) as usize).copied());
        if let Some(victim) = victim {
            match stall.strike {
                Strike::Pause(_) if active.len() < 2 => {}
                Strike::Pause(length) => {
                    self.sinks.pause(victim)?;
                    self.resumes.push((victim, now + length));
                }
                Strike::Kill => {
                    self.sinks.kill(victim, SinkEnd::Killed);
                    self.sinks.spawn()?;
                }
            }
        }
        if stall.locked {
            self.database.end_stall()?;
        }
        Ok(())
    }
}

impl ClientNemesis for SinkFaults<'_> {
    fn tick(&mut self, now: Instant) -> anyhow::Result<()> {
        self.resume_due(now)?;
        match self.stall {
            Some(stall) if now >= stall.until => {
                self.stall = None;
                self.strike(stall, now)
            }
            Some(_) => Ok(()),
            None if now >= self.next_fault && (self.kill || self.pause) => self.begin(now),
            None => Ok(()),
        }
    }
}
