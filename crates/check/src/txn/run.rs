//! The `txn` workload's run: producers, copiers and consumers under the nemesis and the client faults,
//! the final copy and reads, the check, the report.

use crate::nemesis;
use crate::producer_process;
use crate::progress;
use crate::run::{Run, SetUp};
use crate::txn;
use crate::txn::checker::{check_txn, TxnAnomaly};
use crate::txn::copier as txn_copier;
use crate::txn::history::{TxnHistory, Unparseable};
use crate::txn::report as txn_report;
use crate::Fault;

impl Run<'_> {
    pub(crate) fn txn(&self, set_up: &mut SetUp, progress: progress::Progress) -> anyhow::Result<bool> {
        let config = txn::TxnConfig {
            queue: self.config.clone(),
            output: format!("{}-out", self.run_name),
            committed_isolation: self.args.txn_consumer_isolation.config_value(),
        };
        let wall_clock_start_ms = txn::wall_clock_origin_ms(self.start);
        let mut copiers = txn_copier::Copiers::new(self.copier_settings(&config)?, self.start, self.stats.clone());
        let running = txn::start(&config, &self.stats, self.start, self.producer_command()?, self.seed, self.log_dir());
        copiers.spawn(None)?;
        let mut faults = {
            let (kill, pause) =
                (self.args.faults.contains(&Fault::ClientKill), self.args.faults.contains(&Fault::ClientPause));
            let mut client_faults = txn_copier::CopierFaults::new(&mut copiers, kill, pause, self.seed);
            let mut producer_kills = producer_process::ProducerKills::new(&running.pool, self.seed);
            let mut clients: Vec<&mut dyn nemesis::ClientNemesis> = vec![&mut client_faults];
            if kill {
                clients.push(&mut producer_kills);
            }
            self.nemesis(set_up, clients)?
        };
        let recorded = running.finish(&mut copiers)?;
        let (bootstrap, partitions) = (&self.config.bootstrap, self.args.partitions);
        // A final read that cannot complete still gets the report, with what was recorded until then.
        let (reads, incomplete) = match txn::final_reads(&config, self.start) {
            Ok(reads) => (reads, None),
            Err(error) => (txn::FinalReads::default(), Some(format!("the final read failed: {error:#}"))),
        };
        let txn::FinalReads { input, output, input_unparseable, mut output_unparseable } = reads;
        drop(progress);
        let (copier_records, copier_events, transactions) = copiers.into_history();
        let wall_clock_drift_ms = txn::wall_clock_origin_ms(self.start).abs_diff(wall_clock_start_ms);
        faults.extend(copier_events);
        faults.extend(recorded.producer_events);
        faults.sort_by_key(|event| event.time_ms);
        output_unparseable.extend(recorded.reads.unparseable);
        output_unparseable.sort_unstable();
        output_unparseable.dedup();
        let unparseable = input_unparseable.into_iter().map(|place| ("input", place));
        let unparseable = unparseable.chain(output_unparseable.into_iter().map(|place| ("output", place)));
        let history = TxnHistory {
            partitions,
            consumers: txn::CONSUMERS.iter().map(|name| name.to_string()).collect(),
            sends: recorded.sends,
            polls: recorded.reads.polls,
            input,
            output,
            copiers: copier_records,
            transactions,
            wall_clock_start_ms,
            wall_clock_drift_ms,
            producers: recorded.producers,
            concurrent_copiers: recorded.concurrent_copiers,
            unparseable: unparseable
                .map(|(topic, (partition, offset))| Unparseable { topic, partition, offset })
                .collect(),
            faults,
        };
        let mut anomalies = check_txn(&history);
        if incomplete.is_some() {
            // Without the final reads nothing can be called lost.
            anomalies.retain(|anomaly| !matches!(anomaly, TxnAnomaly::Lost { .. } | TxnAnomaly::LostInput { .. }));
        }
        let outcome = txn_report::TxnOutcome {
            seed: self.seed,
            duration_secs: self.args.duration,
            input_topic: &config.queue.topic,
            output_topic: &config.output,
            client_bootstrap: bootstrap,
            history: &history,
            anomalies: &anomalies,
            final_copy_finished: recorded.final_copy_finished,
            faults: set_up.fault_counts(&self.stats),
            incomplete: incomplete.as_deref(),
        };
        self.publish(&outcome)?;
        match incomplete {
            Some(reason) => Err(anyhow::anyhow!(reason)),
            None => Ok(anomalies.is_empty()),
        }
    }

    /// How the `txn` workload starts its copiers.
    pub(crate) fn copier_settings(&self, config: &txn::TxnConfig) -> anyhow::Result<txn_copier::CopierSettings> {
        let command = match &self.args.copier_cmd {
            Some(command) => command.clone(),
            None => txn_copier::default_command()?,
        };
        let log_dir = self.log_dir();
        Ok(txn_copier::CopierSettings {
            command,
            bootstrap: self.config.bootstrap.clone(),
            input: config.queue.topic.clone(),
            output: config.output.clone(),
            group: format!("{}-copier", self.run_name),
            transactional_id: format!("{}-copier", self.run_name),
            seed: self.seed,
            log_dir,
        })
    }
}
