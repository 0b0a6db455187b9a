//! What a run observed, as plain data: every send with its outcome, every record a consumer polled,
//! the final read and the faults injected. The checker is a pure function of this.

use serde::Serialize;

/// Milliseconds since the start of the run.
pub type TimeMs = u64;

/// A value the workload wrote: unique over the run, sent as its decimal digits.
pub type Value = u64;

/// The value producer `producer` sends as its `index`-th record: unique over the run.
pub fn value_of(producer: u32, index: u64) -> Value {
    assert!(index < 1 << 32, "a producer sends fewer than 2^32 records in one run");
    (u64::from(producer) << 32) | index
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SendOutcome {
    /// The broker acknowledged it at this offset.
    Acked { offset: i64 },
    /// The client reported an error. Not definite: the record may still have been written.
    Failed { error: String },
    /// No report before the run ended.
    Unknown,
}

/// One record a producer sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Send {
    /// Which producer sent it.
    pub producer: u32,
    /// Its place in that producer's send order.
    pub index: u64,
    pub value: Value,
    pub partition: i32,
    pub outcome: SendOutcome,
    pub sent_ms: TimeMs,
    /// When the outcome arrived (`sent_ms` while unknown).
    pub done_ms: TimeMs,
}

impl Send {
    /// The offset it was acknowledged at, if it was.
    pub fn acked_offset(&self) -> Option<i64> {
        match self.outcome {
            SendOutcome::Acked { offset } => Some(offset),
            _ => None,
        }
    }
}

/// One record one consumer polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Poll {
    /// Index of the consumer in [`History::consumers`].
    pub consumer: u16,
    /// Bumped on every rebalance or seek of that consumer: offsets may jump between epochs.
    pub epoch: u32,
    pub partition: i32,
    pub offset: i64,
    pub value: Value,
    pub time_ms: TimeMs,
}

/// A fault the nemesis injected or healed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultEvent {
    pub time_ms: TimeMs,
    /// e.g. `kill`, `restart`, `proxy-on`, `proxy-off`.
    pub kind: String,
}

/// Everything a run observed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct History {
    pub partitions: i32,
    /// Consumer names, indexed by [`Poll::consumer`].
    pub consumers: Vec<String>,
    pub sends: Vec<Send>,
    /// Each consumer's polls in the order it received them (consumers interleaved).
    pub polls: Vec<Poll>,
    /// The read of every partition from the start after the faults stopped, in read order.
    pub final_read: Vec<Poll>,
    /// Records whose payload was not a value this run could have written: (partition, offset).
    pub unparseable: Vec<(i32, i64)>,
    pub faults: Vec<FaultEvent>,
    /// How many partitions the broker's metadata listed for the topic at the final read (0: the topic
    /// was gone), when that is known. Fewer than [`History::partitions`] means the broker lost
    /// partitions: every record acknowledged on one of the missing ones is lost.
    pub partitions_at_final_read: Option<i32>,
}

impl History {
    /// Whether the broker no longer had `partition` at the final read.
    pub fn partition_gone(&self, partition: i32) -> bool {
        self.partitions_at_final_read.is_some_and(|found| partition >= found)
    }
}
