//! The `dedup-processor` workload's run: producers and processors under the nemesis and the client
//! faults, the drain by final processors, the final reads of the input and the output, the check,
//! the report.

use crate::dedup_processor::checker::{check_processor, ProcessorAnomaly};
use crate::dedup_processor::history::{ProcessorHistory, TopicRecords};
use crate::dedup_processor::processes::{self, ProcessorFaults, ProcessorSettings, Processors};
use crate::dedup_processor::report::ProcessorOutcome;
use crate::dedup_processor::{self, Drained, ProcessorConfig, ID_HEADER};
use crate::history::FaultEvent;
use crate::producer_process::ProducerPool;
use crate::run::{Run, SetUp};
use crate::{nemesis, producer_process, progress, Fault, ProcessorSource};

/// What the end of a run gathered.
struct Ending {
    drained: Drained,
    input: TopicRecords,
    output: TopicRecords,
    /// Why the run is incomplete, if it is.
    incomplete: Option<String>,
}

impl Run<'_> {
    pub(crate) fn dedup_processor(&self, set_up: &mut SetUp, progress: progress::Progress) -> anyhow::Result<bool> {
        let config = ProcessorConfig {
            queue: self.config.clone(),
            output: format!("{}-out", self.run_name),
            group: format!("{}-dedup", self.run_name),
        };
        let settings = self.processor_settings(&config)?;
        let source = settings.source.clone();
        let mut processors = Processors::new(settings, self.start, self.stats.clone());
        for _ in 0..self.args.processors.max(1) {
            processors.spawn(None)?;
        }
        let mut pool = dedup_processor::start_producers(
            &config,
            &self.stats,
            self.start,
            self.producer_command()?,
            self.seed,
            self.log_dir(),
        );
        let mut faults = self.processor_nemesis(set_up, &mut processors, &pool)?;
        let Ending { drained, input, output, incomplete } =
            self.processor_ending(&config, &mut pool, &mut processors)?;
        drop(progress);
        let sends = pool.take_sends();
        let (producers, producer_events) = pool.into_history()?;
        let (processor_runs, processor_events) = processors.into_history();
        faults.extend(producer_events);
        faults.extend(processor_events);
        faults.sort_by_key(|event| event.time_ms);
        let partitions = self.args.partitions;
        let history =
            ProcessorHistory { partitions, sends, input, output, processors: processor_runs, producers, faults };
        let mut anomalies = check_processor(&history);
        if incomplete.is_some() {
            anomalies.retain(|anomaly| !matches!(anomaly, ProcessorAnomaly::Lost { .. }));
        }
        let outcome = ProcessorOutcome {
            seed: self.seed,
            duration_secs: self.args.duration,
            input_topic: &config.queue.topic,
            output_topic: &config.output,
            group: &config.group,
            source: &source,
            client_bootstrap: &self.config.bootstrap,
            history: &history,
            anomalies: &anomalies,
            drained: &drained,
            faults: set_up.fault_counts(&self.stats),
            incomplete: incomplete.as_deref(),
        };
        self.publish(&outcome)?;
        match incomplete {
            Some(reason) => Err(anyhow::anyhow!(reason)),
            None => Ok(anomalies.is_empty()),
        }
    }

    /// The seeded schedule with the processor faults and, with `client-kill`, the producer kills; then
    /// the paused processors let go at the end of their pauses.
    fn processor_nemesis(
        &self,
        set_up: &mut SetUp,
        processors: &mut Processors,
        pool: &ProducerPool,
    ) -> anyhow::Result<Vec<FaultEvent>> {
        let (kill, pause) =
            (self.args.faults.contains(&Fault::ClientKill), self.args.faults.contains(&Fault::ClientPause));
        let mut processor_faults = ProcessorFaults::new(processors, (kill, pause), self.seed);
        let mut producer_kills = producer_process::ProducerKills::new(pool, self.seed);
        let mut clients: Vec<&mut dyn nemesis::ClientNemesis> = vec![&mut processor_faults];
        if kill {
            clients.push(&mut producer_kills);
        }
        let scheduled = self.nemesis(set_up, clients);
        processor_faults.heal()?;
        scheduled
    }

    /// After the faults: the zombies' time, the last resends, the drain by final processors, and the
    /// final reads of both topics. A drain or read that fails makes the run incomplete, not an error,
    /// so that the report still comes out.
    fn processor_ending(
        &self,
        config: &ProcessorConfig,
        pool: &mut ProducerPool,
        processors: &mut Processors,
    ) -> anyhow::Result<Ending> {
        let partitions = self.args.partitions;
        dedup_processor::finish(pool, processors, partitions, self.seed)?;
        let (drained, mut incomplete) = match dedup_processor::drain(config, processors) {
            Ok(drained) if drained.complete => (drained, None),
            Ok(drained) => {
                let reason = format!("the processors did not drain the input in {} ms", drained.took_ms);
                (drained, Some(reason))
            }
            Err(error) => (Drained::default(), Some(format!("the drain failed: {error:#}"))),
        };
        processors.stop_all();
        let bootstrap = &self.config.bootstrap;
        let mut read = |topic: &str| match dedup_processor::read_records(bootstrap, topic, partitions) {
            Ok(read) => read,
            Err(error) => {
                incomplete.get_or_insert(format!("the final read of {topic} failed: {error:#}"));
                TopicRecords::default()
            }
        };
        let (input, output) = (read(&config.queue.topic), read(&config.output));
        if !output.complete {
            // Ids past where the read got are not lost: without a complete read nothing can be.
            incomplete.get_or_insert("the final read of the output did not reach the end of every partition".into());
        }
        Ok(Ending { drained, input, output, incomplete })
    }

    /// How the `dedup-processor` workload starts its processors.
    fn processor_settings(&self, config: &ProcessorConfig) -> anyhow::Result<ProcessorSettings> {
        let command = match &self.args.processor_cmd {
            Some(command) => command.clone(),
            None => processes::default_command()?,
        };
        let source = match self.args.processor_source {
            ProcessorSource::Header => format!("header:{ID_HEADER}"),
            ProcessorSource::Key => "key".to_string(),
        };
        Ok(ProcessorSettings {
            command,
            bootstrap: self.config.bootstrap.clone(),
            input: config.queue.topic.clone(),
            output: config.output.clone(),
            group: config.group.clone(),
            source,
            count: self.args.processors.max(1),
            seed: self.seed,
            log_dir: self.log_dir(),
        })
    }
}
