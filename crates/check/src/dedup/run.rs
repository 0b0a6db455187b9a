//! The `dedup` workload's run: producer processes under the nemesis and `client-kill`, the final
//! read, the check, the report.

use crate::dedup;
use crate::dedup::checker::{check_dedup, DedupAnomaly, DedupHistory};
use crate::dedup::report as dedup_report;
use crate::nemesis;
use crate::producer_process;
use crate::progress;
use crate::run::{Run, SetUp};
use crate::txn;
use crate::txn::history::TopicRead;
use crate::Fault;

impl Run<'_> {
    pub(crate) fn dedup(&self, set_up: &mut SetUp, progress: progress::Progress) -> anyhow::Result<bool> {
        let config = dedup::DedupConfig {
            queue: self.config.clone(),
            producer_command: self.producer_command()?,
            seed: self.seed,
            log_dir: self.log_dir(),
        };
        let running = dedup::start(&config, &self.stats, self.start);
        let mut faults = {
            let mut producer_kills = producer_process::ProducerKills::new(&running.pool, self.seed);
            let mut clients: Vec<&mut dyn nemesis::ClientNemesis> = Vec::new();
            if self.args.faults.contains(&Fault::ClientKill) {
                clients.push(&mut producer_kills);
            }
            self.nemesis(set_up, clients)?
        };
        let (pool, reads) = running.finish()?;
        let (bootstrap, partitions) = (&self.config.bootstrap, self.args.partitions);
        // A final read that cannot complete still gets the report, with what was recorded until then.
        let (final_read, mut unparseable, incomplete) =
            match txn::read_topic(bootstrap, &self.config.topic, partitions, self.start) {
                Ok((read, unparseable)) => (read, unparseable, None),
                Err(error) => (TopicRead::default(), Vec::new(), Some(format!("the final read failed: {error:#}"))),
            };
        drop(progress);
        let sends = pool.take_sends();
        let (producers, producer_events) = pool.into_history()?;
        faults.extend(producer_events);
        faults.sort_by_key(|event| event.time_ms);
        unparseable.extend(reads.unparseable);
        unparseable.sort_unstable();
        unparseable.dedup();
        let history = DedupHistory {
            partitions,
            consumers: dedup::CONSUMERS.iter().map(|name| name.to_string()).collect(),
            sends,
            polls: reads.polls,
            final_read,
            producers,
            unparseable,
            faults,
        };
        let mut anomalies = check_dedup(&history);
        if incomplete.is_some() {
            // Without a final read nothing can be called lost.
            anomalies.retain(|anomaly| !matches!(anomaly, DedupAnomaly::Lost { .. }));
        }
        let outcome = dedup_report::DedupOutcome {
            seed: self.seed,
            duration_secs: self.args.duration,
            topic: &self.config.topic,
            dedup_source: self.dedup_source.as_deref(),
            client_bootstrap: bootstrap,
            history: &history,
            anomalies: &anomalies,
            faults: set_up.fault_counts(&self.stats),
            incomplete: incomplete.as_deref(),
        };
        self.publish(&outcome)?;
        match incomplete {
            Some(reason) => Err(anyhow::anyhow!(reason)),
            None => Ok(anomalies.is_empty()),
        }
    }
}
