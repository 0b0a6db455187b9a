//! What a `dedup-processor` run observed, as plain data: the sends to the input topic (first sends
//! and resends of ids alike), every `once dedup` process from its start to its end, and the final
//! read_committed reads of the whole input and the whole output. The checker is a pure function of
//! this.

use serde::Serialize;

use crate::history::{FaultEvent, Send, TimeMs, Value};
use crate::producer_process::ProducerRun;

/// Index into [`ProcessorHistory::processors`]; also in the processor's log file name.
pub type ProcessorId = u32;

/// One record of a final read, as the run wrote it: the id in its `once-check-id` header and its
/// payload, the send it is ([`crate::history::value_of`]`(producer, index)`); none where the record
/// has no such header or payload, or it is not a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub id: Option<Value>,
    pub payload: Option<Value>,
}

/// One final read_committed read of a whole topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TopicRecords {
    /// Every record read, in read order (partitions interleaved, each partition in offset order).
    pub records: Vec<Record>,
    /// Per partition, the offset the read is known to be complete below.
    pub read_to: Vec<i64>,
    /// Every partition the broker still had read to its end, with no transaction open.
    pub complete: bool,
    /// How many partitions the broker listed for the topic at the read, when known.
    pub partitions_found: Option<i32>,
}

impl TopicRecords {
    /// Whether the read got past `offset` of `partition`.
    pub fn covers(&self, partition: i32, offset: i64) -> bool {
        usize::try_from(partition).ok().and_then(|index| self.read_to.get(index)).is_some_and(|end| offset < *end)
    }
}

/// How a processor process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProcessorEnd {
    /// Still running when the history was taken (only if the checker could not stop it).
    Running,
    /// SIGKILL by the `client-kill` fault (a successor started at once).
    Killed,
    /// SIGKILL by the checker after the faults, to leave the input to the final processor, or
    /// because a final processor did not finish in time.
    Stopped,
    /// Exited by itself: a final processor once idle (code 0), or a fatal error; `fenced`: the error
    /// says the broker fenced it (a zombie whose transaction the broker aborted while it was paused);
    /// `last_line` is its last line of output (`once dedup`'s summary, or the reason it gave).
    Exited { code: Option<i32>, fenced: bool, last_line: String },
}

/// One SIGSTOP … SIGCONT of a processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pause {
    pub paused_ms: TimeMs,
    /// When it was let go again; none if it never was.
    pub resumed_ms: Option<TimeMs>,
}

/// One `once dedup` process of the run; all share one consumer group (and its changelog topic), each
/// has a transactional id of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessorRun {
    pub id: ProcessorId,
    pub pid: u32,
    pub started_ms: TimeMs,
    pub pauses: Vec<Pause>,
    pub ended_ms: Option<TimeMs>,
    pub end: ProcessorEnd,
    /// A final processor, started after the faults with `--exit-when-idle-ms`.
    pub last: bool,
    /// Partition indexes its log says it restored from the changelog.
    pub restores: u64,
    /// Transactions its log says it aborted (a rebalance, a fenced or failed commit).
    pub aborts: u64,
    /// Its stdout and stderr.
    pub log: String,
}

/// Everything a `dedup-processor` run observed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessorHistory {
    pub partitions: i32,
    /// Every send to the input, its value the id; a send's payload is `value_of(producer, index)`.
    pub sends: Vec<Send>,
    /// The final read of the input.
    pub input: TopicRecords,
    /// The final read of the output.
    pub output: TopicRecords,
    pub processors: Vec<ProcessorRun>,
    pub producers: Vec<ProducerRun>,
    pub faults: Vec<FaultEvent>,
}
