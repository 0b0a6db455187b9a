//! What a `txn` run observed, as plain data: the sends to the input topic, what the live consumers of
//! the output read, every copier process from its start to its end, and the final reads of the whole
//! input and of the whole committed output. The txn checker is a pure function of this.

use serde::Serialize;

use crate::history::{FaultEvent, Poll, Send, TimeMs};
use crate::producer_process::ProducerRun;

/// Index into [`TxnHistory::copiers`]; also in the copier's log file name.
pub type CopierId = u32;

/// [`Poll::consumer`] of the live consumer of the output that must see committed records only.
pub const COMMITTED_CONSUMER: u16 = 0;
/// [`Poll::consumer`] of the live read_uncommitted consumer of the output.
pub const UNCOMMITTED_CONSUMER: u16 = 1;

/// How a copier process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CopierEnd {
    /// Still running when the history was taken (only if the checker could not stop it).
    Running,
    /// SIGKILL by the `client-kill` fault.
    Killed,
    /// SIGKILL by the checker after the faults, to make room for the final copier, or because the
    /// final copier did not finish in time.
    Stopped,
    /// Exited by itself. `fenced`: its output says a newer producer with its transactional id took
    /// over. `last_line`: its last line of output, the reason it gave.
    Exited { code: Option<i32>, fenced: bool, last_line: String },
}

/// One `once copy` process of the run; all share one transactional id and one consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copier {
    pub id: CopierId,
    pub pid: u32,
    /// Its `--seed`: which of its transactions it aborts on purpose.
    pub seed: u64,
    pub started_ms: TimeMs,
    /// When the `client-pause` fault stopped it (SIGSTOP) and when it was let go again (SIGCONT).
    pub paused_ms: Option<TimeMs>,
    pub resumed_ms: Option<TimeMs>,
    pub ended_ms: Option<TimeMs>,
    pub end: CopierEnd,
    /// The final copier, started after the faults with `--exit-when-idle-ms`.
    pub last: bool,
    /// Its stdout and stderr.
    pub log: String,
}

impl Copier {
    /// Exited by itself saying it was fenced.
    pub fn fenced(&self) -> bool {
        matches!(self.end, CopierEnd::Exited { fenced: true, .. })
    }
}

/// A record the run could not have written: which topic (`input` or `output`), where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unparseable {
    pub topic: &'static str,
    pub partition: i32,
    pub offset: i64,
}

/// One final read of a whole topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TopicRead {
    /// Every record read, in read order (partitions interleaved, each partition in offset order).
    pub records: Vec<Poll>,
    /// Per partition, the offset the read is known to be complete below: the high watermark once the
    /// partition was read to its end, else one past the last offset read.
    pub read_to: Vec<i64>,
    /// Every partition read to its end, with no transaction open (last stable offset = high watermark).
    pub complete: bool,
}

/// Everything a `txn` run observed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TxnHistory {
    pub partitions: i32,
    /// Names of the live consumers of the output, indexed by [`Poll::consumer`].
    pub consumers: Vec<String>,
    /// Sends to the input topic.
    pub sends: Vec<Send>,
    /// The live consumers' polls of the output, each consumer's in the order it received them.
    pub polls: Vec<Poll>,
    /// The final read of the input.
    pub input: TopicRead,
    /// The final read_committed read of the output.
    pub output: TopicRead,
    pub copiers: Vec<Copier>,
    /// The input producer processes (killed by `client-kill` too).
    pub producers: Vec<ProducerRun>,
    /// Copiers still running side by side when resumed zombies had been given time to exit: the
    /// broker let two producers with one transactional id live. Empty or one id when all is well.
    pub concurrent_copiers: Vec<CopierId>,
    pub unparseable: Vec<Unparseable>,
    pub faults: Vec<FaultEvent>,
}
