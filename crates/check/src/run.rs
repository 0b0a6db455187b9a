//! One run of `once check`, shared by the workloads: its settings ([`Run`]), the proxy and the
//! managed broker ([`SetUp`]), the nemesis over them, and publishing the outcome. Each workload's
//! own run (`Run::queue`, `Run::group`, `Run::txn`, `Run::dedup`) is in its folder's `run.rs`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::history::FaultEvent;
use crate::queue::QueueConfig;
use crate::{html, nemesis, producer_process, progress, proxy, report, rng, CheckArgs, Fault};

/// One run's settings, shared by the workloads.
pub(crate) struct Run<'a> {
    pub(crate) args: &'a CheckArgs,
    pub(crate) seed: u64,
    pub(crate) start: Instant,
    /// `once-check-WORKLOAD-SEED-MILLIS`: the topic's name, or the prefix of the `txn` workload's names.
    pub(crate) run_name: String,
    pub(crate) config: QueueConfig,
    pub(crate) stats: Arc<progress::Stats>,
    /// `dedup`: the `dedup.source` the topic was created with, if the broker took one.
    pub(crate) dedup_source: Option<String>,
    /// Whether the workload's full JSON report is out ([`Run::publish`] wrote it; a run of
    /// `queue`, `txn` or `dedup` that cannot complete writes one too): a run that fails without one gets the bare incomplete report of
    /// `run_seeded` (lib.rs), and one that fails after it (the HTML report) keeps it.
    pub(crate) report_written: std::cell::Cell<bool>,
}

impl Run<'_> {
    /// The summary table on stdout, `--json` and `--report` (the HTML page, drawn from the JSON report).
    pub(crate) fn publish(&self, outcome: &impl report::Summary) -> anyhow::Result<()> {
        print!("{}", outcome.table());
        if let Some(path) = &self.args.json {
            outcome.write_json(path)?;
            // The full report is out: a later failure (the HTML) must not replace it with the bare one.
            self.report_written.set(true);
        }
        let Some(path) = &self.args.report else { return Ok(()) };
        html::write(path, &outcome.json())?;
        eprintln!("once check: HTML report in {}", path.display());
        Ok(())
    }

    /// The seeded fault schedule until `--duration` is over, then healing (of the broker and the proxy;
    /// client processes are the workload's to heal).
    pub(crate) fn nemesis<'a>(
        &'a self,
        set_up: &'a mut SetUp,
        clients: Vec<&'a mut (dyn nemesis::ClientNemesis + 'a)>,
    ) -> anyhow::Result<Vec<FaultEvent>> {
        let targets = self.targets(set_up, clients);
        let mut rng = rng::Rng::new(self.seed);
        nemesis::run(&mut rng, self.start, self.start + Duration::from_secs(self.args.duration), targets)
    }

    /// [`Run::nemesis`] without client faults, noting faults in `events` as they happen.
    pub(crate) fn nemesis_recording(&self, set_up: &mut SetUp, events: &mut Vec<FaultEvent>) -> anyhow::Result<()> {
        let targets = self.targets(set_up, Vec::new());
        let mut rng = rng::Rng::new(self.seed);
        let until = self.start + Duration::from_secs(self.args.duration);
        nemesis::run_recording(&mut rng, self.start, until, targets, events)
    }

    pub(crate) fn targets<'a>(
        &'a self,
        set_up: &'a mut SetUp,
        clients: Vec<&'a mut (dyn nemesis::ClientNemesis + 'a)>,
    ) -> nemesis::Targets<'a> {
        nemesis::Targets {
            proxy: set_up.proxy.as_ref().map(|proxy| proxy.enabled.clone()),
            broker: set_up.broker.as_mut(),
            broker_faults: nemesis::BrokerFaults {
                kill: self.args.faults.contains(&Fault::Kill),
                power_loss: self.args.faults.contains(&Fault::PowerLoss),
                pause: self.args.faults.contains(&Fault::Pause),
            },
            kills: &self.stats.kills,
            power_losses: &self.stats.power_losses,
            pauses: &self.stats.broker_pauses,
            clients,
        }
    }

    /// Where client processes' logs go: beside `--broker-log`, or to the temp directory.
    pub(crate) fn log_dir(&self) -> PathBuf {
        let log_dir = self.args.broker_log.as_deref().and_then(std::path::Path::parent);
        log_dir.filter(|dir| !dir.as_os_str().is_empty()).map_or_else(std::env::temp_dir, PathBuf::from)
    }

    /// `--producer-cmd`, or this executable's `check-producer`.
    pub(crate) fn producer_command(&self) -> anyhow::Result<String> {
        match &self.args.producer_cmd {
            Some(command) => Ok(command.clone()),
            None => producer_process::default_command(),
        }
    }
}

/// The proxy and the managed broker of one run; dropping it kills the broker.
pub(crate) struct SetUp {
    pub(crate) proxy: Option<proxy::FaultProxy>,
    pub(crate) broker: Option<nemesis::ManagedBroker>,
}

impl SetUp {
    pub(crate) fn new(args: &CheckArgs, seed: u64) -> anyhow::Result<SetUp> {
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
                let power_loss = args.faults.contains(&Fault::PowerLoss);
                Some(nemesis::ManagedBroker::start(command, args.bootstrap.clone(), log, power_loss)?)
            }
            None => None,
        };
        let proxy = match listener {
            Some(listener) => Some(proxy::start(listener, args.bootstrap.clone(), proxy_faults, seed)?),
            None => None,
        };
        Ok(SetUp { proxy, broker })
    }

    pub(crate) fn fault_counts(&self, stats: &progress::Stats) -> report::FaultCounts {
        let broker = report::FaultCounts {
            kills: stats.kills.load(Ordering::Relaxed),
            power_losses: stats.power_losses.load(Ordering::Relaxed),
            broker_pauses: stats.broker_pauses.load(Ordering::Relaxed),
            ..Default::default()
        };
        let Some(proxy) = &self.proxy else { return broker };
        let counters = &proxy.counters;
        report::FaultCounts {
            resets: counters.resets.load(Ordering::Relaxed),
            delays: counters.delays.load(Ordering::Relaxed),
            dropped_responses: counters.dropped_responses.load(Ordering::Relaxed),
            duplicated_produces: counters.duplicated_produces.load(Ordering::Relaxed),
            ..broker
        }
    }
}

pub(crate) fn probability(args: &CheckArgs, fault: Fault) -> f64 {
    if args.faults.contains(&fault) {
        args.fault_probability
    } else {
        0.0
    }
}
