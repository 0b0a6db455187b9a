//! The `queue` workload's run: load under the nemesis, the final read, the check, the report.

use std::time::Duration;

use crate::history::History;
use crate::queue::checker::{check, Anomaly};
use crate::queue::report::Outcome;
use crate::run::{Run, SetUp};
use crate::{progress, queue};

/// How long consumers keep polling after the producers have stopped, before the final read.
const DRAIN: Duration = Duration::from_secs(3);
/// How long producers flush when the run has already failed (its broker may be gone for good).
const INCOMPLETE_FLUSH: Duration = Duration::from_secs(2);

impl Run<'_> {
    /// The `queue` workload. A run that cannot finish (a broker that does not come back, no final
    /// read) still writes its report, with what was recorded and why it is incomplete, then fails.
    pub(crate) fn queue(&self, set_up: &mut SetUp, progress: progress::Progress) -> anyhow::Result<bool> {
        let running = queue::start(&self.config, &self.stats, self.start);
        let mut faults = Vec::new();
        let mut incomplete = self.nemesis_recording(set_up, &mut faults).err().map(|error| format!("{error:#}"));
        // A run that has failed only flushes briefly: its broker may be gone for good.
        let flush = if incomplete.is_some() { INCOMPLETE_FLUSH } else { queue::FLUSH_TIMEOUT };
        let recorded = running.stop(flush, if incomplete.is_some() { Duration::ZERO } else { DRAIN })?;
        let final_read = match incomplete {
            Some(_) => None,
            None => queue::final_read(&self.config, self.start)
                .map_err(|error| incomplete = Some(format!("the final read failed: {error:#}")))
                .ok(),
        };
        drop(progress);
        let mut unparseable = recorded.reads.unparseable;
        let (final_polls, final_read_complete, partitions_at_final_read) = match final_read {
            Some(read) => {
                unparseable.extend(read.reads.unparseable);
                (read.reads.polls, read.complete, Some(read.partitions_found))
            }
            None => (Vec::new(), false, None),
        };
        unparseable.sort_unstable();
        unparseable.dedup();
        let history = History {
            partitions: self.args.partitions,
            consumers: queue::CONSUMERS.iter().map(|name| name.to_string()).collect(),
            sends: recorded.sends,
            polls: recorded.reads.polls,
            final_read: final_polls,
            unparseable,
            faults,
            partitions_at_final_read,
        };
        let mut anomalies = check(&history);
        if partitions_at_final_read.is_none() {
            // Without a final read nothing can be called unseen.
            anomalies.retain(|anomaly| !matches!(anomaly, Anomaly::Unseen { .. }));
        }
        let outcome = Outcome {
            workload: "queue",
            seed: self.seed,
            duration_secs: self.args.duration,
            topic: &self.config.topic,
            client_bootstrap: &self.config.bootstrap,
            history: &history,
            anomalies: &anomalies,
            final_read_complete,
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
