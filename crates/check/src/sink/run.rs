//! The `sink` workload's run: producers and sinks under the nemesis and the sink faults, the drain,
//! the final reads of the input and of the database, the check, the report.

use crate::nemesis;
use crate::run::{Run, SetUp};
use crate::sink::checker::{check_sink, SinkAnomaly};
use crate::sink::database::{redacted, Database};
use crate::sink::history::SinkHistory;
use crate::sink::processes::{self, SinkFaults, SinkSettings, Sinks};
use crate::sink::report::SinkOutcome;
use crate::sink::{self, Drained, BATCH_RECORDS};
use crate::txn::{self, history::TopicRead};
use crate::{progress, Fault};

impl Run<'_> {
    pub(crate) fn sink(&self, set_up: &mut SetUp, progress: progress::Progress) -> anyhow::Result<bool> {
        let url = self.sink_database();
        let mut database = Database::open(&url)?;
        database.create_effect_table()?;
        let at_least_once = self.args.sink_at_least_once.map(|order| order.flag_value());
        let config = sink::SinkConfig {
            queue: self.config.clone(),
            group: format!("{}-sink", self.run_name),
            at_least_once: at_least_once.is_some(),
        };
        let mut sinks = Sinks::new(self.sink_settings(&config, &url, at_least_once)?, self.start, self.stats.clone());
        for _ in 0..self.args.sinks.max(1) {
            sinks.spawn()?;
        }
        let mut pool = sink::start_producers(
            &config,
            &self.stats,
            self.start,
            self.producer_command()?,
            self.seed,
            self.log_dir(),
        );
        let (mut faults, stalls) = {
            let kill_pause =
                (self.args.faults.contains(&Fault::ClientKill), self.args.faults.contains(&Fault::ClientPause));
            let mut sink_faults =
                SinkFaults::new(&mut sinks, &mut database, &config.queue.topic, kill_pause, self.seed);
            let clients: Vec<&mut dyn nemesis::ClientNemesis> = vec![&mut sink_faults];
            let scheduled = self.nemesis(set_up, clients);
            sink_faults.heal()?;
            (scheduled?, sink_faults.stalls)
        };
        let (drained, mut incomplete) = match sink::drain(&config, &mut pool, &mut sinks, &mut database) {
            Ok(drained) if drained.complete => (drained, None),
            Ok(drained) => {
                let reason = format!("the sinks did not drain the input in {} ms", drained.took_ms);
                (drained, Some(reason))
            }
            Err(error) => (Drained::default(), Some(format!("the drain failed: {error:#}"))),
        };
        sinks.terminate_all()?;
        let (bootstrap, partitions, topic) = (&self.config.bootstrap, self.args.partitions, &self.config.topic);
        let (input, unparseable) = match txn::read_topic(bootstrap, topic, partitions, self.start) {
            Ok(read) => read,
            Err(error) => {
                incomplete.get_or_insert(format!("the final read failed: {error:#}"));
                (TopicRead::default(), Vec::new())
            }
        };
        let effects = database.effects(topic)?;
        let positions = database.positions(&config.group, topic, partitions)?;
        drop(progress);
        let sends = pool.take_sends();
        let (producers, producer_events) = pool.into_history()?;
        let (sink_runs, sink_events) = sinks.into_history();
        faults.extend(producer_events);
        faults.extend(sink_events);
        faults.sort_by_key(|event| event.time_ms);
        let history = SinkHistory {
            partitions,
            sends,
            input,
            effects,
            positions,
            sinks: sink_runs,
            producers,
            unparseable,
            faults,
        };
        let mut anomalies = check_sink(&history);
        if incomplete.is_some() {
            // Records the sinks did not get to, or that the final read did not, are not lost.
            anomalies.retain(|anomaly| !matches!(anomaly, SinkAnomaly::LostEffect { .. }));
        }
        let database_name = redacted(&url);
        let outcome = SinkOutcome {
            seed: self.seed,
            duration_secs: self.args.duration,
            topic,
            group: &config.group,
            database: &database_name,
            at_least_once,
            client_bootstrap: bootstrap,
            history: &history,
            anomalies: &anomalies,
            drained: &drained,
            stalls,
            faults: set_up.fault_counts(&self.stats),
            incomplete: incomplete.as_deref(),
        };
        self.publish(&outcome)?;
        match incomplete {
            Some(reason) => Err(anyhow::anyhow!(reason)),
            None => Ok(anomalies.is_empty()),
        }
    }

    /// `--sink-database`, or a SQLite file named after the run beside the logs.
    fn sink_database(&self) -> String {
        match &self.args.sink_database {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.log_dir().join(format!("{}.sqlite", self.run_name)).display()),
        }
    }

    /// How the `sink` workload starts its sinks.
    fn sink_settings(
        &self,
        config: &sink::SinkConfig,
        database: &str,
        at_least_once: Option<&'static str>,
    ) -> anyhow::Result<SinkSettings> {
        let command = match &self.args.sink_cmd {
            Some(command) => command.clone(),
            None => processes::default_command()?,
        };
        Ok(SinkSettings {
            command,
            bootstrap: self.config.bootstrap.clone(),
            topic: config.queue.topic.clone(),
            group: config.group.clone(),
            database: database.to_string(),
            batch_records: BATCH_RECORDS,
            at_least_once,
            count: self.args.sinks.max(1),
            seed: self.seed,
            log_dir: self.log_dir(),
        })
    }
}
