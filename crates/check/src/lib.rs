//! `once check`: runs a workload against a Kafka-compatible broker while injecting seeded faults,
//! records what every client saw, and checks the history for Jepsen's Kafka anomalies (lost and
//! unseen writes, duplicates, inconsistent offsets, non-monotonic sends and polls, poll skips). It
//! talks to the broker only over the network, so it checks Once or any other Kafka broker.
//!
//! # Layout
//! - `lib.rs`: [`CheckArgs`] (the `once check` flags), [`run`]: set-up, the run, the verdict.
//! - `queue`: the `queue` workload — idempotent producers, assign and subscribe consumers, the
//!   final read — turning what the clients saw into a [`History`].
//! - `history`: the recorded history as plain data.
//! - `checker`: the anomaly classes, pure functions of a history (unit tests in `checker_tests.rs`).
//! - `group` (with `group_run.rs`): the `group` workload — members that process, commit and crash,
//!   and the fresh consumer that resumes from the committed offsets — recording a [`GroupHistory`].
//! - `group_history`, `group_checker` (tests in `group_checker_tests.rs`), `group_report`: its
//!   history, its anomaly classes as pure functions, its table and JSON report.
//! - `proxy`: the seeded TCP fault proxy (resets, delays, lost responses, duplicated produces).
//! - `nemesis`: the broker process under `--broker-cmd` and the kill -9 / proxy schedule.
//! - `progress`: live counters and the one-line progress indicator on stderr.
//! - `report`: the summary table and the JSON report.
//! - `rng`: the seeded generator behind every fault decision.

mod checker;
mod group;
mod group_checker;
mod group_history;
mod group_report;
mod history;
mod nemesis;
mod progress;
mod proxy;
mod queue;
mod report;
mod rng;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

pub use checker::{check, Anomaly, CLASSES};
pub use group_checker::{check_group, reprocessing, GroupAnomaly, Reprocessing, GROUP_CLASSES};
pub use group_history::{Commit, CommittedRead, GroupHistory, Incarnation, Processed, Resume};
pub use history::{FaultEvent, History, Poll, Send, SendOutcome};

/// How long consumers keep polling after the producers have stopped, before the final read.
const DRAIN: Duration = Duration::from_secs(3);

/// Workloads `once check` can run. `txn` (transactional copiers) and `dedup` (message-id resends)
/// are not implemented yet.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Idempotent producers, assign and subscribe consumers, a final read.
    Queue,
    /// Consumer-group members committing offsets while they crash; a fresh member resumes at the end.
    Group,
}

/// Faults the checker can inject.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The proxy closes both connections before forwarding a request.
    Reset,
    /// The proxy holds a request for up to 50 ms.
    Delay,
    /// The proxy forwards a request, swallows its response and closes the connections.
    LostResponse,
    /// The proxy sends a Produce request twice and swallows the second response.
    Duplicate,
    /// SIGKILL and restart of the broker (needs `--broker-cmd`).
    Kill,
    /// `group` workload: a member's client is dropped without committing or leaving the group, and
    /// the proxy cuts it off, as if its process had died.
    Crash,
}

/// Flags of `once check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// The broker, HOST:PORT. With `--broker-cmd`, the address the started broker listens on.
    #[arg(long, env = "ONCE_BOOTSTRAP", value_name = "HOST:PORT")]
    pub bootstrap: String,
    /// What to run.
    #[arg(long, env = "ONCE_CHECK_WORKLOAD", value_enum, default_value = "queue")]
    pub workload: Workload,
    /// Seconds of load under faults (the final read comes after).
    #[arg(long, env = "ONCE_CHECK_DURATION", default_value_t = 30, value_name = "SECS")]
    pub duration: u64,
    /// Seed of the fault schedule and of every proxy decision [default: from the clock, printed].
    #[arg(long, env = "ONCE_CHECK_SEED", value_name = "N")]
    pub seed: Option<u64>,
    /// Also write the JSON report here.
    #[arg(long, env = "ONCE_CHECK_JSON", value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Start and manage the broker with this shell command, to kill -9 and restart it. `{listen}` and
    /// `{advertised}` are replaced by `--bootstrap` and the proxy address; without them the command
    /// gets `--listen BOOTSTRAP --advertised-listener PROXY` appended (Once's flags).
    #[arg(long, env = "ONCE_CHECK_BROKER_CMD", value_name = "CMD")]
    pub broker_cmd: Option<String>,
    /// Where the managed broker's output goes [default: once-check-broker-SEED.log in the temp dir].
    #[arg(long, env = "ONCE_CHECK_BROKER_LOG", value_name = "PATH")]
    pub broker_log: Option<PathBuf>,
    /// Run the fault proxy on this address. A broker the checker does not manage must advertise it
    /// (Once: `--advertised-listener`). With `--broker-cmd` the proxy runs anyway, on a free port.
    #[arg(long, env = "ONCE_CHECK_PROXY", value_name = "HOST:PORT")]
    pub proxy: Option<String>,
    /// Faults to inject, comma-separated.
    #[arg(
        long,
        env = "ONCE_CHECK_FAULTS",
        value_enum,
        value_delimiter = ',',
        default_value = "reset,delay,lost-response,duplicate,kill,crash"
    )]
    pub faults: Vec<Fault>,
    /// Probability of each proxy fault per request while the proxy's faults are on.
    #[arg(long, env = "ONCE_CHECK_FAULT_PROBABILITY", default_value_t = 0.01)]
    pub fault_probability: f64,
    /// Partitions of the topic the run creates.
    #[arg(long, env = "ONCE_CHECK_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
    /// Concurrent producers.
    #[arg(long, env = "ONCE_CHECK_PRODUCERS", default_value_t = 2)]
    pub producers: u32,
    /// Records per second, over all producers.
    #[arg(long, env = "ONCE_CHECK_RATE", default_value_t = 500)]
    pub rate: u32,
    /// enable.idempotence of the producers. `false` only to see the checker catch the duplicates a
    /// non-idempotent producer writes under retries.
    #[arg(long, env = "ONCE_CHECK_PRODUCER_IDEMPOTENCE", default_value_t = true, action = clap::ArgAction::Set)]
    pub producer_idempotence: bool,
    /// `group` workload: members of the consumer group.
    #[arg(long, env = "ONCE_CHECK_MEMBERS", default_value_t = 3)]
    pub members: u16,
    /// `group` workload: commit each batch before processing it. `true` only to see the checker catch
    /// the records a crash between the two then skips.
    #[arg(long, env = "ONCE_CHECK_COMMIT_BEFORE_PROCESS", default_value_t = false, action = clap::ArgAction::Set)]
    pub commit_before_process: bool,
}

/// Runs the check; true if no anomaly was found. Prints the seed at the start and with any failure.
pub fn run(args: CheckArgs) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| now_ms() ^ u64::from(std::process::id()));
    let faults: Vec<String> = args.faults.iter().map(|fault| format!("{fault:?}").to_lowercase()).collect();
    eprintln!(
        "once check: workload {:?}, seed {seed}, {} s of faults: {}",
        args.workload,
        args.duration,
        faults.join(",")
    );
    run_seeded(&args, seed).with_context(|| format!("once check stopped (seed {seed})"))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|since| since.as_millis() as u64).unwrap_or(0)
}

fn run_seeded(args: &CheckArgs, seed: u64) -> anyhow::Result<bool> {
    let start = Instant::now();
    let mut set_up = SetUp::new(args, seed)?;
    let client_bootstrap = set_up.proxy.as_ref().map_or(args.bootstrap.clone(), |proxy| proxy.address.clone());
    let workload = format!("{:?}", args.workload).to_lowercase();
    let topic = format!("once-check-{workload}-{seed}-{}", now_ms());
    create_topic(&client_bootstrap, &topic, args.partitions)?;
    if set_up.proxy.is_some() && set_up.broker.is_none() {
        warn_unless_advertised(&client_bootstrap);
    }
    let config = queue::QueueConfig {
        bootstrap: client_bootstrap.clone(),
        topic: topic.clone(),
        partitions: args.partitions,
        producers: args.producers,
        rate: args.rate,
        idempotence: args.producer_idempotence,
    };
    let run = Run { args, seed, start, config, stats: Arc::new(progress::Stats::default()) };
    let proxy_counters = set_up.proxy.as_ref().map(|proxy| proxy.counters.clone());
    let progress = progress::start(run.stats.clone(), proxy_counters, Duration::from_secs(args.duration));
    let valid = match args.workload {
        Workload::Queue => run.queue(&mut set_up, progress)?,
        Workload::Group => run.group(&mut set_up, progress)?,
    };
    if !valid {
        eprintln!("once check: anomalies found (seed {seed})");
    }
    Ok(valid)
}

/// One run's settings, shared by the workloads.
struct Run<'a> {
    args: &'a CheckArgs,
    seed: u64,
    start: Instant,
    config: queue::QueueConfig,
    stats: Arc<progress::Stats>,
}

impl Run<'_> {
    /// The seeded fault schedule until `--duration` is over, then healing.
    fn nemesis(&self, set_up: &mut SetUp) -> anyhow::Result<Vec<FaultEvent>> {
        let targets = nemesis::Targets {
            proxy: set_up.proxy.as_ref().map(|proxy| proxy.enabled.clone()),
            broker: set_up.broker.as_mut().filter(|_| self.args.faults.contains(&Fault::Kill)),
            kills: &self.stats.kills,
        };
        let mut rng = rng::Rng::new(self.seed);
        nemesis::run(&mut rng, self.start, self.start + Duration::from_secs(self.args.duration), targets)
    }

    fn queue(&self, set_up: &mut SetUp, progress: progress::Progress) -> anyhow::Result<bool> {
        let running = queue::start(&self.config, &self.stats, self.start);
        let faults = self.nemesis(set_up)?;
        let recorded = running.stop(DRAIN)?;
        let (final_reads, final_read_complete) = queue::final_read(&self.config, self.start)?;
        drop(progress);
        let mut unparseable = recorded.reads.unparseable;
        unparseable.extend(final_reads.unparseable);
        unparseable.sort_unstable();
        unparseable.dedup();
        let history = History {
            partitions: self.args.partitions,
            consumers: queue::CONSUMERS.iter().map(|name| name.to_string()).collect(),
            sends: recorded.sends,
            polls: recorded.reads.polls,
            final_read: final_reads.polls,
            unparseable,
            faults,
        };
        let anomalies = check(&history);
        let outcome = report::Outcome {
            workload: "queue",
            seed: self.seed,
            duration_secs: self.args.duration,
            topic: &self.config.topic,
            client_bootstrap: &self.config.bootstrap,
            history: &history,
            anomalies: &anomalies,
            final_read_complete,
            faults: set_up.fault_counts(self.stats.kills.load(Ordering::Relaxed)),
        };
        print!("{}", outcome.table());
        if let Some(path) = &self.args.json {
            outcome.write_json(path)?;
        }
        Ok(anomalies.is_empty())
    }

    fn group(&self, set_up: &mut SetUp, progress: progress::Progress) -> anyhow::Result<bool> {
        let crashes = self.args.faults.contains(&Fault::Crash);
        let config = group::GroupConfig {
            queue: self.config.clone(),
            members: self.args.members,
            commit_before_process: self.args.commit_before_process,
            crashes_until: crashes.then(|| self.start + Duration::from_secs(self.args.duration)),
            crashed_clients: set_up.proxy.as_ref().map(|proxy| proxy.crashed_clients.clone()),
            seed: self.seed,
        };
        let running = group::start(&config, &self.stats, self.start);
        let mut faults = self.nemesis(set_up)?;
        let (sends, log) = running.stop()?;
        let (resume, final_read_complete) = group::resume(&config, &log, self.start)?;
        drop(progress);
        let log = std::mem::take(&mut *log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        faults.extend(log.crashes);
        faults.sort_by_key(|event| event.time_ms);
        let mut unparseable = log.unparseable;
        unparseable.sort_unstable();
        unparseable.dedup();
        let history = GroupHistory {
            partitions: self.args.partitions,
            sends,
            incarnations: log.incarnations,
            processed: log.processed,
            commits: log.commits,
            committed_reads: log.committed_reads,
            resume,
            final_read_complete,
            unparseable,
            faults,
        };
        let anomalies = check_group(&history);
        let outcome = group_report::GroupOutcome {
            seed: self.seed,
            duration_secs: self.args.duration,
            topic: &self.config.topic,
            client_bootstrap: &self.config.bootstrap,
            history: &history,
            anomalies: &anomalies,
            reprocessing: reprocessing(&history),
            faults: set_up.fault_counts(self.stats.kills.load(Ordering::Relaxed)),
            crashed_client_cutoffs: set_up
                .proxy
                .as_ref()
                .map_or(0, |proxy| proxy.counters.crashed_client_cutoffs.load(Ordering::Relaxed)),
        };
        print!("{}", outcome.table());
        if let Some(path) = &self.args.json {
            outcome.write_json(path)?;
        }
        Ok(anomalies.is_empty())
    }
}

/// The proxy and the managed broker of one run; dropping it kills the broker.
struct SetUp {
    proxy: Option<proxy::FaultProxy>,
    broker: Option<nemesis::ManagedBroker>,
}

impl SetUp {
    fn new(args: &CheckArgs, seed: u64) -> anyhow::Result<SetUp> {
        let proxy_faults = proxy::ProxyFaults {
            reset: probability(args, Fault::Reset),
            delay: probability(args, Fault::Delay),
            drop_response: probability(args, Fault::LostResponse),
            duplicate_produce: probability(args, Fault::Duplicate),
        };
        let wants_proxy = args.proxy.is_some() || args.broker_cmd.is_some();
        let listener = match (&args.proxy, wants_proxy) {
            (Some(address), _) => {
                Some(TcpListener::bind(address).with_context(|| format!("binding the proxy to {address}"))?)
            }
            (None, true) => Some(TcpListener::bind("127.0.0.1:0").context("binding the proxy")?),
            (None, false) => None,
        };
        let advertised = match &listener {
            Some(listener) => listener.local_addr()?.to_string(),
            None => args.bootstrap.clone(),
        };
        let broker = match &args.broker_cmd {
            Some(template) => {
                let command = nemesis::broker_command(template, &args.bootstrap, &advertised);
                let log = args
                    .broker_log
                    .clone()
                    .unwrap_or_else(|| std::env::temp_dir().join(format!("once-check-broker-{seed}.log")));
                eprintln!("once check: starting the broker: {command} (log: {})", log.display());
                Some(nemesis::ManagedBroker::start(command, args.bootstrap.clone(), log)?)
            }
            None => None,
        };
        let proxy = match listener {
            Some(listener) => Some(proxy::start(listener, args.bootstrap.clone(), proxy_faults, seed)?),
            None => None,
        };
        Ok(SetUp { proxy, broker })
    }

    fn fault_counts(&self, kills: u64) -> report::FaultCounts {
        let Some(proxy) = &self.proxy else { return report::FaultCounts { kills, ..Default::default() } };
        let counters = &proxy.counters;
        report::FaultCounts {
            kills,
            resets: counters.resets.load(Ordering::Relaxed),
            delays: counters.delays.load(Ordering::Relaxed),
            dropped_responses: counters.dropped_responses.load(Ordering::Relaxed),
            duplicated_produces: counters.duplicated_produces.load(Ordering::Relaxed),
        }
    }
}

fn probability(args: &CheckArgs, fault: Fault) -> f64 {
    if args.faults.contains(&fault) {
        args.fault_probability
    } else {
        0.0
    }
}

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().context("creating an admin client")?;
    // -1: the broker's default replication factor (KIP-464).
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in block_on(admin.create_topics([&new_topic], &options)).context("CreateTopics")? {
        result.map_err(|(name, code)| anyhow::anyhow!("creating topic {name}: {code}"))?;
    }
    Ok(())
}

/// Clients bypass the proxy unless the broker advertises it: say so rather than check nothing.
fn warn_unless_advertised(proxy: &str) {
    let consumer: Result<BaseConsumer, _> = ClientConfig::new().set("bootstrap.servers", proxy).create();
    let Ok(metadata) = consumer.and_then(|consumer| consumer.fetch_metadata(None, Duration::from_secs(10))) else {
        return;
    };
    let port = proxy.rsplit(':').next().unwrap_or_default();
    if !metadata.brokers().iter().all(|broker| broker.port().to_string() == port) {
        eprintln!(
            "once check: WARNING the broker does not advertise the proxy {proxy}; clients will bypass its faults"
        );
    }
}

/// Runs a future on this thread: the admin futures are resolved by librdkafka's own threads, so
/// parking until woken is all an executor needs to do (as in once-bench).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context as TaskContext, Poll as TaskPoll, Wake, Waker};
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = TaskContext::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut context) {
            TaskPoll::Ready(output) => return output,
            TaskPoll::Pending => std::thread::park(),
        }
    }
}
