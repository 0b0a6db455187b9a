//! Producers as processes, so that a client crash is a real SIGKILL of a real librdkafka producer in
//! the middle of its sends (the `dedup` workload's producers, the `txn` and `dedup-processor`
//! workloads' input producers).
//!
//! The child is `once check-producer` ([`ProducerArgs`], [`run_producer`]): it reads lines
//! `SLOT ID PARTITION [PAYLOAD]` on stdin, sends the value `ID` (decimal; `PAYLOAD` instead when the
//! line has one) to `PARTITION`, with the id also in a header if asked, and writes one line per
//! delivery report on stdout: `a SLOT OFFSET` (acknowledged) or `f SLOT ERROR`. At the end of its stdin it flushes and exits. It knows nothing of the run: the
//! checker decides every id and partition and keeps every send's record by `SLOT`; a send whose line
//! never came back stays unknown.
//!
//! The parent is [`ProducerPool`]: `--producers` slots, each holding one process at a time, fed at
//! `--rate` by a feeder thread. A process retires (stdin closed, flush, exit) after a seeded number of
//! sends and a fresh one — a new producer id — takes its slot; [`ProducerKills`] kills one with
//! SIGKILL on the nemesis's clock (`client-kill`).

use std::io::{BufRead, BufReader, LineWriter, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use serde::Serialize;

use crate::history::{FaultEvent, Send, SendOutcome, TimeMs, Value};
use crate::nemesis::{elapsed_ms, ClientNemesis};
use crate::queue::{client, Recorder};
use crate::rng::Rng;

/// How long a retiring or stopped producer may flush before it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(40);
/// A producer process is killed every this many milliseconds (a uniform draw per kill).
const KILL_INTERVAL_MS: (u64, u64) = (1000, 3000);
/// Seed stream of the producer-kill schedule, apart from the broker, proxy and copier schedules.
const KILL_STREAM: u64 = 4_000;
/// A producer process's `message.timeout.ms`, one drawn per process: short ones make sends fail while
/// the broker is down or paused (failed sends are resent too), the long one rides faults out.
const MESSAGE_TIMEOUTS_MS: [u64; 3] = [1_500, 4_000, 30_000];
/// Seed stream of the feeder's decisions (ids, partitions, batching).
const FEED_STREAM: u64 = 5_000;

/// Flags of `once check-producer`, the checker's producer process (not for people).
#[derive(clap::Args, Debug, Clone)]
pub struct ProducerArgs {
    /// The broker (the checker's proxy when there is one).
    #[arg(long)]
    pub bootstrap: String,
    /// Where every record goes.
    #[arg(long)]
    pub topic: String,
    /// Also put the id in this header (the `dedup` workload's message id).
    #[arg(long)]
    pub id_header: Option<String>,
    /// librdkafka's `linger.ms`.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// librdkafka's `batch.num.messages`.
    #[arg(long, default_value_t = 10_000)]
    pub batch_messages: u64,
    /// librdkafka's `message.timeout.ms`: a send not acknowledged by then fails.
    #[arg(long, default_value_t = 30_000)]
    pub message_timeout_ms: u64,
    /// librdkafka's `enable.idempotence`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub idempotence: bool,
}

/// Writes one line per delivery report, flushed at once so that a SIGKILL loses no report written.
struct Reporter {
    out: Mutex<LineWriter<std::io::Stdout>>,
}

impl ClientContext for Reporter {}
impl ProducerContext for Reporter {
    type DeliveryOpaque = Box<u64>;
    fn delivery(&self, result: &DeliveryResult<'_>, slot: Box<u64>) {
        use rdkafka::Message;
        let line = match result {
            Ok(message) => format!("a {slot} {}", message.offset()),
            Err((error, _)) => format!("f {slot} {}", error.to_string().replace('\n', " ")),
        };
        let mut out = self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = writeln!(out, "{line}");
    }
}

/// `once check-producer`: sends what stdin says, reports every delivery on stdout.
pub fn run_producer(args: ProducerArgs) -> anyhow::Result<()> {
    let reporter = Reporter { out: Mutex::new(LineWriter::new(std::io::stdout())) };
    let producer: ThreadedProducer<Reporter> = client(&args.bootstrap)
        .set("enable.idempotence", args.idempotence.to_string())
        .set("acks", "all")
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.num.messages", args.batch_messages.to_string())
        .set("message.timeout.ms", args.message_timeout_ms.to_string())
        .set("request.timeout.ms", "5000")
        .create_with_context(reporter)
        .context("creating the producer")?;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading stdin")?;
        let mut fields = line.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(slot)), Some(Ok(id)), Some(Ok(partition))) = (fields.next(), fields.next(), fields.next()) else {
            anyhow::bail!("not `SLOT ID PARTITION [PAYLOAD]`: {line:?}");
        };
        let payload = match fields.next() {
            Some(payload) => payload.with_context(|| format!("not `SLOT ID PARTITION [PAYLOAD]`: {line:?}"))?,
            None => id,
        };
        let (id, partition, payload) = (id.to_string(), i32::try_from(partition)?, payload.to_string());
        let mut record = BaseRecord::with_opaque_to(&args.topic, Box::new(slot)).partition(partition).payload(&payload);
        if let Some(name) = &args.id_header {
            record = record.headers(OwnedHeaders::new().insert(Header { key: name, value: Some(&id) }));
        }
        loop {
            match producer.send::<(), _>(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((error, _)) => {
                    let out = &producer.context().out;
                    let mut out = out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    let _ = writeln!(out, "f {slot} {error}");
                    break;
                }
            }
        }
    }
    // What is not acknowledged by then stays unknown to the checker.
    let _ = producer.flush(Duration::from_secs(30));
    Ok(())
}

/// How a producer process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProducerEnd {
    /// Still running when the history was taken (only if the checker could not stop it).
    Running,
    /// SIGKILL by the `client-kill` fault, mid-send.
    Killed,
    /// Exited by itself after its stdin closed (retired, or the end of the run).
    Exited { code: Option<i32> },
    /// SIGKILL by the checker because it did not exit in time after its stdin closed.
    Stopped,
}

/// One producer process of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProducerRun {
    /// [`Send::producer`] of its sends.
    pub number: u32,
    pub pid: u32,
    pub linger_ms: u64,
    pub batch_messages: u64,
    pub message_timeout_ms: u64,
    pub started_ms: TimeMs,
    pub ended_ms: Option<TimeMs>,
    pub end: ProducerEnd,
    pub sends: u64,
}

/// Producer processes: started, killed, exited by themselves, stopped by the checker.
pub(crate) fn producer_counts(producers: &[ProducerRun]) -> (usize, usize, usize, usize) {
    let count = |wanted: fn(&ProducerEnd) -> bool| producers.iter().filter(|run| wanted(&run.end)).count();
    (
        producers.len(),
        count(|end| *end == ProducerEnd::Killed),
        count(|end| matches!(end, ProducerEnd::Exited { .. })),
        count(|end| *end == ProducerEnd::Stopped),
    )
}

/// What the pool needs to know.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// The command the flags are appended to, e.g. `/usr/bin/once check-producer`.
    pub command: String,
    pub bootstrap: String,
    pub topic: String,
    pub id_header: Option<String>,
    pub payload: Payload,
    pub idempotence: bool,
    /// Processes at a time.
    pub slots: u32,
    /// Sends per second over all slots.
    pub rate: u32,
    /// A process retires after this many sends (a uniform draw per process).
    pub sends_per_producer: (u64, u64),
    pub seed: u64,
    /// Where the processes' stderr goes, all appended to one file: `once-check-producers-SEED.log`
    /// (hundreds of processes start in a long run).
    pub log_dir: PathBuf,
}

/// What a record's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The id (every workload but `dedup-processor`).
    Id,
    /// The send's own value, [`crate::history::value_of`]`(producer, index)`: which send of an id a
    /// record is, where the id travels in the header alone (`dedup-processor`).
    Send,
}

/// The default `--producer-cmd`: this executable's `check-producer` subcommand.
pub fn default_command() -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding the current executable for --producer-cmd")?;
    Ok(format!("'{}' check-producer", exe.to_string_lossy().replace('\'', r"'\''")))
}

/// Decides what the feeder sends next: an id and a partition.
pub trait Ids: std::marker::Send {
    /// `sends` is every send so far, outcomes as known now; `producer` is the process that will send.
    fn next(&mut self, rng: &mut Rng, sends: &[Send], producer: u32) -> (Value, i32);
}

/// One running process and what the parent keeps of it.
struct Process {
    number: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    reader: JoinHandle<()>,
    sends_left: u64,
}

/// The processes, the record of all of them, and the events.
struct PoolState {
    settings: PoolSettings,
    start: Instant,
    recorder: Recorder,
    slots: Vec<Option<Process>>,
    /// Processes whose stdin was closed, flushing.
    exiting: Vec<(Process, Instant)>,
    runs: Vec<ProducerRun>,
    events: Vec<FaultEvent>,
    rng: Rng,
}

impl PoolState {
    fn note(&mut self, kind: String) {
        self.events.push(FaultEvent { time_ms: elapsed_ms(self.start), kind });
    }

    fn spawn(&mut self) -> anyhow::Result<Process> {
        let number = u32::try_from(self.runs.len()).context("too many producer processes")?;
        let (linger_ms, batch_messages) = (self.rng.between(0, 50), self.rng.between(1, 200));
        let message_timeout_ms =
            MESSAGE_TIMEOUTS_MS[self.rng.between(0, MESSAGE_TIMEOUTS_MS.len() as u64 - 1) as usize];
        let sends_left = self.rng.between(self.settings.sends_per_producer.0, self.settings.sends_per_producer.1);
        let settings = &self.settings;
        let mut command = format!(
            "exec {} --bootstrap {} --topic {} --linger-ms {linger_ms} --batch-messages {batch_messages} \
             --message-timeout-ms {message_timeout_ms} --idempotence {}",
            settings.command, settings.bootstrap, settings.topic, settings.idempotence
        );
        if let Some(header) = &settings.id_header {
            command.push_str(&format!(" --id-header {header}"));
        }
        let log = settings.log_dir.join(format!("once-check-producers-{}.log", settings.seed));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting a producer: {command}"))?;
        let stdout = child.stdout.take().context("the producer's stdout")?;
        let recorder = self.recorder.clone();
        let reader = std::thread::spawn(move || read_reports(stdout, &recorder));
        self.runs.push(ProducerRun {
            number,
            pid: child.id(),
            linger_ms,
            batch_messages,
            message_timeout_ms,
            started_ms: elapsed_ms(self.start),
            ended_ms: None,
            end: ProducerEnd::Running,
            sends: 0,
        });
        self.note(format!("producer-start {number}"));
        Ok(Process { number, stdin: child.stdin.take(), child, reader, sends_left })
    }

    fn end(&mut self, number: u32, end: ProducerEnd) {
        let ended_ms = elapsed_ms(self.start);
        let kind = match &end {
            ProducerEnd::Killed => format!("producer-kill {number}"),
            ProducerEnd::Stopped => format!("producer-stop {number}"),
            ProducerEnd::Exited { code } => format!("producer-exit {number} ({code:?})"),
            ProducerEnd::Running => return,
        };
        if let Some(run) = self.runs.get_mut(number as usize) {
            run.ended_ms = Some(ended_ms);
            run.end = end;
        }
        if kind.starts_with("producer-exit") {
            // Retirements are routine; only kills and stops go on the timeline.
            return;
        }
        self.note(kind);
    }

    /// Closes a process's stdin: it flushes and exits by itself.
    fn retire(&mut self, mut process: Process) {
        process.stdin = None;
        self.exiting.push((process, Instant::now() + EXIT_TIMEOUT));
    }

    /// Records every retired process that has exited; kills those past their time.
    fn reap(&mut self) {
        let mut index = 0;
        while index < self.exiting.len() {
            let (process, deadline) = &mut self.exiting[index];
            let status = process.child.try_wait().ok().flatten();
            let overdue = status.is_none() && Instant::now() >= *deadline;
            if status.is_none() && !overdue {
                index += 1;
                continue;
            }
            let (mut process, _) = self.exiting.remove(index);
            let end = match status {
                Some(status) => ProducerEnd::Exited { code: status.code() },
                None => {
                    let _ = process.child.kill();
                    let _ = process.child.wait();
                    ProducerEnd::Stopped
                }
            };
            let _ = process.reader.join();
            self.end(process.number, end);
        }
    }

    /// Sends one record through slot `slot`, starting a process there if it has none.
    fn feed(&mut self, slot: usize, ids: &mut dyn Ids) -> anyhow::Result<()> {
        let process = match self.slots[slot].take() {
            Some(process) if process.sends_left > 0 => process,
            Some(process) => {
                self.retire(process);
                self.spawn()?
            }
            None => self.spawn()?,
        };
        let mut process = process;
        let (id, partition) = {
            let sends = self.recorder.sends.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            ids.next(&mut self.rng, &sends, process.number)
        };
        let run = &mut self.runs[process.number as usize];
        let sent_ms = elapsed_ms(self.start);
        let send = Send {
            producer: process.number,
            index: run.sends,
            value: id,
            partition,
            outcome: SendOutcome::Unknown,
            sent_ms,
            done_ms: sent_ms,
        };
        run.sends += 1;
        process.sends_left -= 1;
        let payload = match self.settings.payload {
            Payload::Id => String::new(),
            Payload::Send => format!(" {}", crate::history::value_of(send.producer, send.index)),
        };
        let slot_number = self.recorder.push(send);
        let written = match process.stdin.as_mut() {
            Some(stdin) => writeln!(stdin, "{slot_number} {id} {partition}{payload}").and_then(|()| stdin.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        match written {
            Ok(()) => self.slots[slot] = Some(process),
            Err(error) => {
                // The process is gone (it died by itself): this record never reached it.
                self.recorder.finish(slot_number, SendOutcome::Failed { error: format!("producer process: {error}") });
                self.retire(process);
            }
        }
        Ok(())
    }

    /// SIGKILL of the process in a seeded slot, if any runs.
    fn kill_one(&mut self, pick: u64) {
        let occupied: Vec<usize> = (0..self.slots.len()).filter(|&slot| self.slots[slot].is_some()).collect();
        let Some(&slot) = occupied.get(pick as usize % occupied.len().max(1)) else { return };
        let Some(mut process) = self.slots[slot].take() else { return };
        let _ = process.child.kill();
        let _ = process.child.wait();
        let _ = process.reader.join();
        self.recorder.stats.producer_kills.fetch_add(1, Ordering::Relaxed);
        self.end(process.number, ProducerEnd::Killed);
    }
}

/// Fills in sends' outcomes from a process's report lines until its stdout closes.
fn read_reports(stdout: std::process::ChildStdout, recorder: &Recorder) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { return };
        let mut fields = line.splitn(3, ' ');
        let (Some(kind), Some(Ok(slot))) = (fields.next(), fields.next().map(str::parse::<usize>)) else { continue };
        let rest = fields.next().unwrap_or_default();
        let outcome = match (kind, rest.parse::<i64>()) {
            ("a", Ok(offset)) => SendOutcome::Acked { offset },
            ("f", _) => SendOutcome::Failed { error: rest.to_string() },
            _ => continue,
        };
        recorder.finish(slot, outcome);
    }
}

/// The producer processes of a run and the thread that feeds them.
pub struct ProducerPool {
    state: Arc<Mutex<PoolState>>,
    stop: Arc<AtomicBool>,
    feeder: Option<JoinHandle<anyhow::Result<()>>>,
    recorder: Recorder,
}

fn lock(state: &Mutex<PoolState>) -> MutexGuard<'_, PoolState> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ProducerPool {
    /// Starts the feeder: every 1/`rate` s the next slot in turn sends what `ids` decides.
    pub fn start(settings: PoolSettings, recorder: Recorder, mut ids: Box<dyn Ids>) -> ProducerPool {
        let interval = Duration::from_secs_f64(1.0 / f64::from(settings.rate.max(1)));
        let slots = settings.slots.max(1) as usize;
        let state = PoolState {
            rng: Rng::new(settings.seed).fork(FEED_STREAM),
            settings,
            start: recorder.start,
            recorder: recorder.clone(),
            slots: (0..slots).map(|_| None).collect(),
            exiting: Vec::new(),
            runs: Vec::new(),
            events: Vec::new(),
        };
        let state = Arc::new(Mutex::new(state));
        let stop = Arc::new(AtomicBool::new(false));
        let feeder = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut next = Instant::now();
                let mut turn = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now < next {
                        std::thread::sleep((next - now).min(Duration::from_millis(10)));
                        continue;
                    }
                    let mut state = lock(&state);
                    state.reap();
                    state.feed(turn % slots, ids.as_mut())?;
                    turn += 1;
                    next += interval;
                }
                Ok(())
            })
        };
        ProducerPool { state, stop, feeder: Some(feeder), recorder }
    }

    /// Stops feeding, closes every process's stdin and waits for them to flush and exit (killing any
    /// that take longer than [`EXIT_TIMEOUT`]).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(feeder) = self.feeder.take() {
            feeder.join().map_err(|_| anyhow::anyhow!("the producer feeder panicked"))??;
        }
        let mut state = lock(&self.state);
        for slot in 0..state.slots.len() {
            if let Some(process) = state.slots[slot].take() {
                state.retire(process);
            }
        }
        while !state.exiting.is_empty() {
            state.reap();
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Sends `lines` through one fresh process as fast as it takes them, then closes its stdin and
    /// waits for it to exit: the end of the run's resends, without faults.
    pub fn send_all(&mut self, lines: &[(Value, i32)]) -> anyhow::Result<()> {
        struct Listed<'a>(std::slice::Iter<'a, (Value, i32)>);
        impl Ids for Listed<'_> {
            fn next(&mut self, _: &mut Rng, _: &[Send], _: u32) -> (Value, i32) {
                self.0.next().copied().unwrap_or_default()
            }
        }
        let mut state = lock(&self.state);
        let process = state.spawn()?;
        state.slots[0] = Some(Process { sends_left: lines.len() as u64, ..process });
        let mut listed = Listed(lines.iter());
        for _ in lines {
            state.feed(0, &mut listed)?;
        }
        if let Some(process) = state.slots[0].take() {
            state.retire(process);
        }
        while !state.exiting.is_empty() {
            state.reap();
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Every producer process of the run and the kill events.
    pub fn into_history(mut self) -> anyhow::Result<(Vec<ProducerRun>, Vec<FaultEvent>)> {
        self.stop()?;
        let mut state = lock(&self.state);
        Ok((std::mem::take(&mut state.runs), std::mem::take(&mut state.events)))
    }

    /// A copy of every send so far.
    pub fn sends(&self) -> Vec<Send> {
        self.recorder.sends.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Every send so far, taken out of the recorder.
    pub fn take_sends(&self) -> Vec<Send> {
        self.recorder.take_sends()
    }
}

impl Drop for ProducerPool {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let mut state = lock(&self.state);
        let running: Vec<Process> = state.slots.iter_mut().filter_map(Option::take).collect();
        let exiting = std::mem::take(&mut state.exiting).into_iter().map(|(process, _)| process);
        for mut process in running.into_iter().chain(exiting) {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}

/// The `client-kill` fault on producer processes, on the nemesis's clock: every 1–3 s (seeded) one
/// running producer, picked by the seed, dies by SIGKILL mid-send; the feeder starts a fresh one in its
/// slot with the next record.
pub struct ProducerKills {
    state: Arc<Mutex<PoolState>>,
    rng: Rng,
    next: Instant,
}

impl ProducerKills {
    pub fn new(pool: &ProducerPool, seed: u64) -> ProducerKills {
        let mut rng = Rng::new(seed).fork(KILL_STREAM);
        let next = Instant::now() + Duration::from_millis(rng.between(KILL_INTERVAL_MS.0, KILL_INTERVAL_MS.1));
        ProducerKills { state: pool.state.clone(), rng, next }
    }
}

impl ClientNemesis for ProducerKills {
    fn tick(&mut self, now: Instant) -> anyhow::Result<()> {
        if now < self.next {
            return Ok(());
        }
        self.next = now + Duration::from_millis(self.rng.between(KILL_INTERVAL_MS.0, KILL_INTERVAL_MS.1));
        let pick = self.rng.next_u64();
        lock(&self.state).kill_one(pick);
        Ok(())
    }
}
