//! One transactional id's metadata and the pure transitions of the coordinator's state machine.
//!
//! Every function here decides; none writes. The coordinator persists the returned metadata in the
//! transaction log and only then installs it in memory (so memory never runs ahead of the log).
//! The states and rules follow Kafka's `TransactionMetadata`:
//!
//! ```text
//! Empty ──AddPartitions/AddOffsets──▶ Ongoing ──EndTxn──▶ PrepareCommit ──markers──▶ CompleteCommit
//!   ▲                                   │  └──EndTxn(abort), timeout, fence──▶ PrepareAbort ──▶ CompleteAbort
//!   └──InitProducerId (epoch bump)◀─────┴──────────── (from Empty or Complete*) ◀─────────────────┘
//! ```

use std::collections::BTreeSet;

use crate::error::TxnError;

/// Where a transactional id's current transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    /// No transaction open (after InitProducerId).
    Empty,
    /// Partitions or groups added; data may be in flight.
    Ongoing,
    /// Decided to commit; durable before any marker is written.
    PrepareCommit,
    /// Decided to abort; durable before any marker is written.
    PrepareAbort,
    /// Every commit marker is written.
    CompleteCommit,
    /// Every abort marker is written.
    CompleteAbort,
}

impl TxnState {
    /// The name Kafka's admin APIs use (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|state| state.name() == name)
    }

    pub const ALL: [TxnState; 6] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
    ];

    pub(crate) fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
        }
    }

    pub(crate) fn from_code(code: i8) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|state| state.code() == code)
    }

    /// Markers are being written (or must be, after a restart).
    pub fn is_prepared(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }

    /// No transaction is open: a new one may start, the epoch may be bumped.
    pub fn is_settled(self) -> bool {
        matches!(self, TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort)
    }
}

/// A topic partition taking part in a transaction.
pub type TopicPartition = (String, i32);

/// What the coordinator knows of one transactional id. Persisted whole on every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The id and epoch the last KIP-360 bump replaced, so a client retrying that InitProducerId
    /// gets the same answer instead of being fenced. -1 when none, and after a new incarnation's
    /// InitProducerId: it fences every earlier holder, so nothing may pass for a retry of it.
    pub last_producer_id: i64,
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    /// Consumer groups whose offsets are part of the transaction (AddOffsetsToTxn).
    pub groups: BTreeSet<String>,
    /// When the open transaction started (its first AddPartitions/AddOffsets); -1 when none.
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// Who asks InitProducerId for a new epoch of a known transactional id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochRequester {
    /// A new incarnation of the application (the request names no producer id and epoch), or an
    /// operator's `once txn abort --transactional-id`: every earlier holder is fenced for good.
    NewIncarnation,
    /// The current holder asking for a bump after an abortable error (KIP-360): a retry of the same
    /// request, naming the pair this bump replaces, gets the same answer.
    CurrentProducer,
}

/// What an InitProducerId on a known transactional id leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitDecision {
    /// A retry of the KIP-360 bump that produced the current epoch: answer the current pair again,
    /// write nothing.
    Retry,
    /// Finish or fence the open transaction, then bump the epoch for this requester.
    Bump(EpochRequester),
}

/// The largest epoch a producer id may reach: past it the coordinator hands out a new producer id
/// (Kafka keeps `Short.MaxValue` itself unused so that a fence can always bump once more).
pub const EPOCH_MAX: i16 = i16::MAX - 1;

impl TxnMetadata {
    /// A transactional id seen for the first time.
    pub fn new(producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            producer_id,
            producer_epoch: 0,
            last_producer_id: -1,
            last_producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
        }
    }

    /// Checks that a request's producer id and epoch are this transactional id's current ones.
    pub fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<(), TxnError> {
        if producer_id != self.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if producer_epoch != self.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        Ok(())
    }

    /// InitProducerId: `expected` is the (producer id, epoch) a KIP-360 client names, `None` for a
    /// new incarnation. A named pair must be the current one, or the pair the last KIP-360 bump
    /// replaced while no transaction has started since (a retry); anything else is fenced, in
    /// particular the pair a new incarnation replaced (Kafka's `prepareIncrementProducerEpoch`).
    pub fn init_decision(&self, expected: Option<(i64, i16)>) -> Result<InitDecision, TxnError> {
        let Some(named) = expected else { return Ok(InitDecision::Bump(EpochRequester::NewIncarnation)) };
        let last = (self.last_producer_id, self.last_producer_epoch);
        if self.last_producer_id >= 0 && named == last && self.state == TxnState::Empty {
            return Ok(InitDecision::Retry);
        }
        if named != (self.producer_id, self.producer_epoch) {
            return Err(TxnError::ProducerFenced);
        }
        Ok(InitDecision::Bump(EpochRequester::CurrentProducer))
    }

    /// Whether the transaction has run longer than its timeout.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing && now_ms.saturating_sub(self.start_ms) > i64::from(self.timeout_ms)
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the metadata with `partitions` and `groups` added, or
    /// `None` when nothing changes (all already part of the ongoing transaction).
    pub fn add(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
        groups: &[String],
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        if self.state.is_prepared() {
            return Err(TxnError::ConcurrentTransactions);
        }
        let known = self.state == TxnState::Ongoing
            && partitions.iter().all(|partition| self.partitions.contains(partition))
            && groups.iter().all(|group| self.groups.contains(group));
        if known {
            return Ok(None);
        }
        let mut next = self.clone();
        if self.state != TxnState::Ongoing {
            next.partitions.clear();
            next.groups.clear();
            next.start_ms = now_ms;
            next.state = TxnState::Ongoing;
        }
        next.partitions.extend(partitions.iter().cloned());
        next.groups.extend(groups.iter().cloned());
        next.last_update_ms = now_ms;
        Ok(Some(next))
    }

    /// EndTxn: what to do for a commit (`commit`) or abort request.
    pub fn end(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<EndDecision, TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        match (self.state, commit) {
            (TxnState::Ongoing, _) => Ok(EndDecision::Prepare(self.prepared(commit, now_ms))),
            // A retry of an EndTxn that already completed: the same answer again.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(EndDecision::AlreadyDone),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => Err(TxnError::ConcurrentTransactions),
            // Ending a transaction that never started, or the opposite of what was decided.
            _ => Err(TxnError::InvalidTxnState(format!(
                "cannot {} a transaction in state {}",
                if commit { "commit" } else { "abort" },
                self.state.name()
            ))),
        }
    }

    /// The metadata in PrepareCommit or PrepareAbort.
    pub fn prepared(&self, commit: bool, now_ms: i64) -> TxnMetadata {
        assert_eq!(self.state, TxnState::Ongoing, "only an ongoing transaction is prepared");
        let mut next = self.clone();
        next.state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
        next.last_update_ms = now_ms;
        next
    }

    /// The metadata once every marker is written: Complete*, no partitions.
    pub fn completed(&self, now_ms: i64) -> TxnMetadata {
        let state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            other => panic!("only a prepared transaction completes, not one in {}", other.name()),
        };
        let mut next = self.clone();
        next.state = state;
        next.partitions.clear();
        next.groups.clear();
        next.start_ms = -1;
        next.last_update_ms = now_ms;
        next
    }

    /// Fencing an ongoing transaction (a new incarnation's InitProducerId, or its timeout): the epoch
    /// is bumped first, so that the abort markers carry the new epoch and fence the old producer at
    /// every partition; then the transaction is prepared to abort.
    pub fn fenced_abort(&self, now_ms: i64) -> TxnMetadata {
        assert_eq!(self.state, TxnState::Ongoing, "only an ongoing transaction is fenced");
        let mut next = self.prepared(false, now_ms);
        if self.producer_epoch < i16::MAX {
            next.producer_epoch = self.producer_epoch + 1;
        }
        next
    }

    /// InitProducerId on a settled transactional id: the next epoch, or a new producer id (from
    /// `new_producer_id`) when the epoch is exhausted. `timeout_ms` is the client's new timeout. The
    /// replaced pair is kept for a KIP-360 retry only; a new incarnation records -1/-1.
    pub fn bumped(
        &self,
        requester: EpochRequester,
        timeout_ms: i32,
        now_ms: i64,
        new_producer_id: impl FnOnce() -> Result<i64, TxnError>,
    ) -> Result<TxnMetadata, TxnError> {
        assert!(self.state.is_settled(), "the epoch is bumped only between transactions");
        let mut next = self.clone();
        (next.last_producer_id, next.last_producer_epoch) = match requester {
            EpochRequester::CurrentProducer => (self.producer_id, self.producer_epoch),
            EpochRequester::NewIncarnation => (-1, -1),
        };
        if self.producer_epoch >= EPOCH_MAX {
            next.producer_id = new_producer_id()?;
            next.producer_epoch = 0;
        } else {
            next.producer_epoch = self.producer_epoch + 1;
        }
        next.timeout_ms = timeout_ms;
        next.state = TxnState::Empty;
        next.partitions.clear();
        next.groups.clear();
        next.start_ms = -1;
        next.last_update_ms = now_ms;
        Ok(next)
    }
}

/// What an EndTxn leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndDecision {
    /// Persist this Prepare* metadata, write the markers, then complete.
    Prepare(TxnMetadata),
    /// The transaction already ended this way: answer success.
    AlreadyDone,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        (topic.to_string(), partition)
    }

    #[test]
    fn a_transaction_runs_through_every_state() {
        let empty = TxnMetadata::new(7, 60_000, 1);
        let ongoing = empty.add(7, 0, &[tp("a", 0)], &[], 2).expect("adds").expect("changes");
        assert_eq!((ongoing.state, ongoing.start_ms), (TxnState::Ongoing, 2));
        assert_eq!(ongoing.add(7, 0, &[tp("a", 0)], &[], 3).expect("adds"), None, "known partition: no write");
        let more = ongoing.add(7, 0, &[tp("a", 1)], &["g".into()], 3).expect("adds").expect("changes");
        assert_eq!(more.partitions.len(), 2);
        assert_eq!(more.start_ms, 2, "adding more keeps the start time");
        let EndDecision::Prepare(prepared) = more.end(7, 0, true, 4).expect("ends") else { panic!("prepares") };
        assert_eq!(prepared.state, TxnState::PrepareCommit);
        assert_eq!(prepared.add(7, 0, &[tp("a", 0)], &[], 5), Err(TxnError::ConcurrentTransactions));
        let done = prepared.completed(5);
        assert_eq!((done.state, done.partitions.len(), done.groups.len()), (TxnState::CompleteCommit, 0, 0));
        assert_eq!(done.end(7, 0, true, 6), Ok(EndDecision::AlreadyDone), "a retried commit succeeds");
        assert!(matches!(done.end(7, 0, false, 6), Err(TxnError::InvalidTxnState(_))));
        let next = done.add(7, 0, &[tp("b", 0)], &[], 7).expect("adds").expect("changes");
        assert_eq!((next.state, next.partitions.len(), next.start_ms), (TxnState::Ongoing, 1, 7));
    }

    #[test]
    fn wrong_producers_are_refused() {
        let ongoing = TxnMetadata::new(7, 60_000, 1).add(7, 0, &[tp("a", 0)], &[], 2).unwrap().unwrap();
        assert_eq!(ongoing.add(8, 0, &[], &[], 3), Err(TxnError::InvalidProducerIdMapping));
        assert_eq!(ongoing.end(7, 1, true, 3), Err(TxnError::ProducerFenced));
        assert!(matches!(TxnMetadata::new(7, 1, 1).end(7, 0, true, 2), Err(TxnError::InvalidTxnState(_))));
    }

    #[test]
    fn fencing_bumps_the_epoch_before_the_abort_markers() {
        let ongoing = TxnMetadata::new(7, 60_000, 1).add(7, 3, &[tp("a", 0)], &[], 2);
        assert_eq!(ongoing, Err(TxnError::ProducerFenced));
        let mut at_three = TxnMetadata::new(7, 60_000, 1);
        at_three.producer_epoch = 3;
        let ongoing = at_three.add(7, 3, &[tp("a", 0)], &[], 2).unwrap().unwrap();
        let fenced = ongoing.fenced_abort(3);
        assert_eq!((fenced.state, fenced.producer_epoch), (TxnState::PrepareAbort, 4));
        assert_eq!(fenced.partitions, ongoing.partitions, "the markers go where the data went");
        let bumped = fenced.completed(4).bumped(EpochRequester::NewIncarnation, 1000, 5, || unreachable!());
        let bumped = bumped.expect("bumps");
        assert_eq!((bumped.producer_id, bumped.producer_epoch, bumped.state), (7, 5, TxnState::Empty));
        assert_eq!((bumped.last_producer_id, bumped.last_producer_epoch), (-1, -1), "nothing to retry");
    }

    #[test]
    fn an_exhausted_epoch_gets_a_new_producer_id() {
        let mut metadata = TxnMetadata::new(7, 60_000, 1);
        metadata.producer_epoch = EPOCH_MAX;
        let bumped = metadata.bumped(EpochRequester::CurrentProducer, 60_000, 2, || Ok(99)).expect("bumps");
        assert_eq!((bumped.producer_id, bumped.producer_epoch), (99, 0));
        assert_eq!((bumped.last_producer_id, bumped.last_producer_epoch), (7, EPOCH_MAX));
        assert_eq!(bumped.init_decision(Some((7, EPOCH_MAX))), Ok(InitDecision::Retry), "a retry of the rotation");
    }

    #[test]
    fn a_new_incarnation_leaves_nothing_to_retry() {
        let first = TxnMetadata::new(7, 60_000, 1);
        let bump = EpochRequester::CurrentProducer;
        assert_eq!(first.init_decision(Some((7, 0))), Ok(InitDecision::Bump(bump)));
        assert_eq!(first.init_decision(None), Ok(InitDecision::Bump(EpochRequester::NewIncarnation)));
        let kip_360 = first.bumped(bump, 60_000, 2, || unreachable!()).expect("bumps");
        assert_eq!(kip_360.init_decision(Some((7, 0))), Ok(InitDecision::Retry), "a retried KIP-360 bump");
        let incarnation = kip_360.bumped(EpochRequester::NewIncarnation, 60_000, 3, || unreachable!()).unwrap();
        assert_eq!(incarnation.producer_epoch, 2);
        assert_eq!(incarnation.init_decision(Some((7, 1))), Err(TxnError::ProducerFenced), "the replaced holder");
        assert_eq!(incarnation.init_decision(Some((7, 0))), Err(TxnError::ProducerFenced));
        assert_eq!(incarnation.init_decision(Some((7, -1))), Err(TxnError::ProducerFenced), "no pair matches -1");
        assert_eq!(incarnation.init_decision(Some((8, 2))), Err(TxnError::ProducerFenced));
        let ongoing = kip_360.add(7, 1, &[tp("a", 0)], &[], 4).unwrap().unwrap();
        assert_eq!(ongoing.init_decision(Some((7, 0))), Err(TxnError::ProducerFenced), "a retry only while Empty");
    }

    #[test]
    fn expiry_counts_from_the_transaction_start() {
        let ongoing = TxnMetadata::new(7, 1000, 0).add(7, 0, &[tp("a", 0)], &[], 100).unwrap().unwrap();
        assert!(!ongoing.is_expired(1100));
        assert!(ongoing.is_expired(1101));
        assert!(!TxnMetadata::new(7, 1000, 0).is_expired(1_000_000), "only open transactions expire");
    }

    #[test]
    fn state_names_roundtrip() {
        for state in TxnState::ALL {
            assert_eq!(TxnState::from_name(state.name()), Some(state));
            assert_eq!(TxnState::from_code(state.code()), Some(state));
        }
    }
}
