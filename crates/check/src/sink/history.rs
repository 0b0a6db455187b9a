//! What a `sink` run observed, as plain data: the sends to the input topic, every `once sink`
//! process from its start to its end, the final read_committed read of the whole input, and what
//! the database holds at the end — the effect rows the sinks wrote and the positions they stored.
//! The sink checker is a pure function of this.

use serde::Serialize;

use crate::history::{FaultEvent, Send, TimeMs};
use crate::producer_process::ProducerRun;
use crate::txn::history::TopicRead;

/// Index into [`SinkHistory::sinks`]; also the `sink` column of the effects that process wrote.
pub type SinkId = u32;

/// How a sink process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SinkEnd {
    /// Still running when the history was taken (only if the checker could not stop it).
    Running,
    /// SIGKILL by the `client-kill` fault (a successor started at once).
    Killed,
    /// SIGTERM by the checker at the end; `code` is how it exited (0: it finished its batch).
    Terminated { code: Option<i32> },
    /// SIGKILL by the checker: it did not exit in time after SIGTERM.
    Stopped,
    /// Exited by itself (a fatal error); `last_line` is its last line of output, the reason it gave.
    Exited { code: Option<i32>, last_line: String },
}

/// One SIGSTOP … SIGCONT of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pause {
    pub paused_ms: TimeMs,
    /// When it was let go again, as a zombie whose partitions have moved; none if it never was.
    pub resumed_ms: Option<TimeMs>,
}

/// One `once sink` process of the run; all share one consumer group (the `sink` of their position
/// rows) and one database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkProcess {
    pub id: SinkId,
    pub pid: u32,
    pub started_ms: TimeMs,
    pub pauses: Vec<Pause>,
    pub ended_ms: Option<TimeMs>,
    pub end: SinkEnd,
    /// Batches its log says the fence refused (`batch refused`): a zombie's late batch, or a batch
    /// whose partition another sink had moved on.
    pub refused_batches: u64,
    /// Its stdout and stderr.
    pub log: String,
}

/// One row of the effect table: the record a sink applied, as the sink bound it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effect {
    /// The record's `once-check-id` header, as text (none if the record had no such header).
    pub id: Option<String>,
    pub partition: i32,
    pub offset: i64,
    /// Which sink process wrote it ([`SinkId`] as text).
    pub sink: String,
}

/// Everything a `sink` run observed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkHistory {
    pub partitions: i32,
    /// Sends to the input topic; each value is also its record's id.
    pub sends: Vec<Send>,
    /// The final read_committed read of the input.
    pub input: TopicRead,
    /// Every effect row of the run's topic, in the order the database holds them.
    pub effects: Vec<Effect>,
    /// Per partition, the `next_offset` the database stores for the sinks' group (none: no row).
    pub positions: Vec<Option<i64>>,
    pub sinks: Vec<SinkProcess>,
    /// The input producer processes.
    pub producers: Vec<ProducerRun>,
    /// Input records whose payload was not a value this run could have written: (partition, offset).
    pub unparseable: Vec<(i32, i64)>,
    pub faults: Vec<FaultEvent>,
}

impl SinkHistory {
    /// The stored position of `partition`, if the database has a row for it.
    pub fn position(&self, partition: i32) -> Option<i64> {
        usize::try_from(partition).ok().and_then(|index| self.positions.get(index).copied().flatten())
    }
}
