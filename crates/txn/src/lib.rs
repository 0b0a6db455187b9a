//! The Once transaction coordinator: maps transactional ids to producer ids and epochs, runs the
//! two-phase commit of each transaction across partitions and consumer-group offsets, aborts
//! transactions that outlive their timeout, and keeps all of it in a durable, fsynced log.
//!
//! # Layout
//! - [`state`] — [`TxnMetadata`] and the pure transitions of the state machine.
//! - [`coordinator`] — [`TxnCoordinator`]: locks, persistence, markers, timer, recovery.
//! - [`store`] — the transaction log (an internal partition) and its record layout.
//! - [`error`] — [`TxnError`], the coordinator's refusals (the Kafka edge maps them to codes).
//!
//! The coordinator knows nothing of the wire protocol's framing or of where partitions live: the
//! broker translates requests, and writes markers through a [`MarkerWriter`] it provides.

#![forbid(unsafe_code)]

pub mod coordinator;
pub mod error;
pub mod state;
pub mod store;

pub use coordinator::{
    BoxFuture, MarkerError, MarkerWriter, OperatorAbort, ProducerIdSource, TxnConfig, TxnCoordinator, TxnDescription,
    VerifiedTxn, COORDINATOR_EPOCH, CRASH_AFTER_PREPARE_COMMIT, CRASH_POINTS_COMPILED,
};
pub use error::TxnError;
pub use state::{EpochRequester, InitDecision, TopicPartition, TxnMetadata, TxnState};
