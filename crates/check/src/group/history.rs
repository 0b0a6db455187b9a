//! What a `group` run observed, as plain data: the sends, every consumer incarnation, what each one
//! processed and committed (with the broker's answer), every committed offset read back, and the
//! fresh consumer's resume at the end. The group checker is a pure function of this.

use serde::Serialize;

use crate::history::{FaultEvent, Send, TimeMs, Value};

/// Index into [`GroupHistory::incarnations`].
pub type IncarnationId = u32;

/// One life of one member: a consumer client from its creation to its crash or its orderly close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incarnation {
    /// The member slot it fills; [`FINAL_MEMBER`] for the fresh consumer at the end.
    pub member: u16,
    /// Its `client.id`, unique over the run: what the proxy cuts off when it crashes.
    pub client_id: String,
    pub started_ms: TimeMs,
    /// When it crashed or closed (`started_ms` while it still runs).
    pub ended_ms: TimeMs,
    /// Crashed: dropped without committing, leaving the group or closing its connections cleanly.
    pub crashed: bool,
}

/// Member slot of the fresh consumer that resumes from the committed offsets at the end.
pub const FINAL_MEMBER: u16 = u16::MAX;

/// One record an incarnation processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Processed {
    pub incarnation: IncarnationId,
    pub partition: i32,
    pub offset: i64,
    pub value: Value,
    pub time_ms: TimeMs,
}

/// One partition's offset in one OffsetCommit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commit {
    pub incarnation: IncarnationId,
    pub partition: i32,
    /// The committed offset: the next offset to process, as Kafka defines it.
    pub offset: i64,
    pub sent_ms: TimeMs,
    pub done_ms: TimeMs,
    /// True if the broker acknowledged it. A failed commit is not definite: it may have been applied.
    pub acked: bool,
}

/// A committed offset read back from the group coordinator (OffsetFetch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommittedRead {
    pub incarnation: IncarnationId,
    pub partition: i32,
    /// `None`: the group has no committed offset for the partition.
    pub offset: Option<i64>,
    pub sent_ms: TimeMs,
    pub done_ms: TimeMs,
}

/// Where the fresh consumer at the end started, per partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resume {
    pub partition: i32,
    /// The group's committed offset as the fresh consumer fetched it.
    pub committed: Option<i64>,
    /// The first offset it was given, if the partition had a record at or after its start.
    pub first_polled: Option<i64>,
    /// The partition's high watermark when the final read began.
    pub high_watermark: i64,
}

/// Everything a `group` run observed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupHistory {
    pub partitions: i32,
    pub sends: Vec<Send>,
    pub incarnations: Vec<Incarnation>,
    /// Each incarnation's processed records in the order it processed them (incarnations interleaved).
    pub processed: Vec<Processed>,
    pub commits: Vec<Commit>,
    pub committed_reads: Vec<CommittedRead>,
    /// One entry per partition; empty if the fresh consumer never got its assignment.
    pub resume: Vec<Resume>,
    /// Whether the fresh consumer read every partition up to its high watermark.
    pub final_read_complete: bool,
    /// How many partitions of the topic the broker's metadata listed at the final resume (0: the topic
    /// was gone), when known. Fewer than created means the broker lost partitions: the fresh consumer
    /// resumes on the others, and everything acknowledged on a missing one is lost (evidence
    /// `partition-gone`).
    pub partitions_found: Option<i32>,
    /// Records whose payload was not a value this run could have written: (partition, offset).
    pub unparseable: Vec<(i32, i64)>,
    pub faults: Vec<FaultEvent>,
}
