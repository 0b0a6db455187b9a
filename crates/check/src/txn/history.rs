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

/// One transaction of one copier, from its `--trace` file: what it copied and when it asked to commit
/// or abort (wall-clock ms since the Unix epoch, the host's clock, which every process of the run
/// shares).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TracedTransaction {
    pub copier: CopierId,
    /// Its number within the copier process, from 0.
    pub transaction: u64,
    /// Which producer instance of the copier ran it: a copier starts a fresh one after a fatal
    /// (non-fenced) error. librdkafka does not tell the copier its producer epoch.
    pub producer: u32,
    /// Just before `commit_transaction` was first called; none if it never was.
    pub commit_unix_ms: Option<u64>,
    /// Just before `abort_transaction` was first called; none if it never was.
    pub abort_unix_ms: Option<u64>,
    /// `committed`, `aborted` or `failed` (the call's error in [`TracedTransaction::error`]); none if
    /// the copier died before it knew.
    pub outcome: Option<String>,
    pub error: Option<String>,
    /// The input records it copied, per input partition: (partition, first offset, last offset). A
    /// transaction reads each partition forward without seeking, so every input record in between is
    /// one of its records; each goes to the same partition number of the output.
    pub input: Vec<(i32, i64, i64)>,
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
    /// Every partition the broker still had read to its end, with no transaction open (last stable
    /// offset = high watermark).
    pub complete: bool,
    /// How many partitions the broker's metadata listed for the topic at the read (0: the topic was
    /// gone), when known. Fewer than created means the broker lost partitions: everything acknowledged
    /// or committed on a missing one is lost (evidence `partition-gone`).
    pub partitions_found: Option<i32>,
}

impl TopicRead {
    /// Whether the broker no longer had `partition` at the read.
    pub fn partition_gone(&self, partition: i32) -> bool {
        self.partitions_found.is_some_and(|found| partition >= found)
    }
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
    /// Every transaction the copiers traced, copier by copier, in the order they began.
    pub transactions: Vec<TracedTransaction>,
    /// The wall clock (ms since the Unix epoch) at the run's time 0, the origin of every `time_ms`:
    /// what relates the copiers' traced times to the consumers' poll times.
    pub wall_clock_start_ms: u64,
    /// How far that origin moved between the start and the end of the run (a step of the wall clock,
    /// as NTP may make): the precommitted-read check widens its tolerance by this much.
    pub wall_clock_drift_ms: u64,
    /// The input producer processes (killed by `client-kill` too).
    pub producers: Vec<ProducerRun>,
    /// Copiers still running side by side when resumed zombies had been given time to exit: the
    /// broker let two producers with one transactional id live. Empty or one id when all is well.
    pub concurrent_copiers: Vec<CopierId>,
    pub unparseable: Vec<Unparseable>,
    pub faults: Vec<FaultEvent>,
}
