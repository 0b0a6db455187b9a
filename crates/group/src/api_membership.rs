//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup as coordinator operations on plain types: the
//! checks that need the coordinator (closed, group id, session timeout bounds, group count), the
//! group's state machine (`crate::membership`) under the lock, and the wait for a rebalance outside
//! it. The Kafka edge translates requests and responses.

use std::time::Instant;

use crate::config::CoordinatorNode;
use crate::coordinator::{now_ms, GroupCoordinator};
use crate::error::GroupError;
use crate::group::{Group, JoinSuccess, Reply, SyncSuccess};
use crate::membership::{JoinRequest, SyncRequest};
use crate::records::GroupRecord;

impl GroupCoordinator {
    /// The broker that coordinates every group and transaction (FindCoordinator's answer).
    pub fn node(&self) -> &CoordinatorNode {
        &self.config.node
    }

    /// JoinGroup: resolves when the join completes (a rebalance may make it wait). The group's new
    /// protocol type is durable before the join is answered; the join itself does not depend on it.
    pub async fn join(&self, group_id: &str, join: JoinRequest) -> Result<JoinSuccess, GroupError> {
        let mut recorded = None;
        let reply = admit_join(self, group_id.to_string(), join, &mut recorded);
        if let Some(Recorded { written, protocol_type, previous }) = recorded {
            // A refused write (the log's queue full: `Busy`) wrote nothing and does not latch the log,
            // so memory forgets it recorded the type and the next join of the group writes it again
            // (an I/O failure latches the log, and every later write fails too).
            if let Err(error) = written.await {
                tracing::warn!(%error, group = %group_id, "recording a group's protocol type failed");
                forget_recorded(self, group_id, protocol_type, previous);
            }
        }
        reply.resolve().await
    }

    /// SyncGroup: resolves when the leader's assignment arrives (or at once, in a stable group).
    pub async fn sync(&self, group_id: &str, sync: SyncRequest) -> Result<SyncSuccess, GroupError> {
        let reply = if self.is_closed() {
            Reply::Now(Err(GroupError::CoordinatorNotAvailable))
        } else {
            let mut groups = self.lock();
            match groups.groups.get_mut(group_id) {
                Some(group) => group.sync(sync, Instant::now()),
                None => Reply::Now(Err(GroupError::UnknownMemberId)),
            }
        };
        reply.resolve().await
    }

    /// Heartbeat of a member at a generation.
    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        if self.is_closed() {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let mut groups = self.lock();
        match groups.groups.get_mut(group_id) {
            Some(group) => group.heartbeat(member_id, group_instance_id, generation_id, Instant::now()),
            None => Err(GroupError::UnknownMemberId),
        }
    }

    /// LeaveGroup of (member id, group instance id) pairs: one outcome each, in order, or the error of
    /// the whole request (an unknown group). The group rebalances if any member left.
    pub fn leave(
        &self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let mut groups = self.lock();
        let group = groups.groups.get_mut(group_id).ok_or(GroupError::UnknownMemberId)?;
        let outcomes: Vec<Result<(), GroupError>> = leaving
            .iter()
            .map(|(member_id, group_instance_id)| group.leave(member_id, group_instance_id.as_deref()))
            .collect();
        if outcomes.iter().any(Result::is_ok) {
            group.after_member_gone(Instant::now(), now_ms());
        }
        Ok(outcomes)
    }
}

/// A group record queued by [`admit_join`]: its write, the type it records and the recorded type
/// it replaced.
struct Recorded {
    written: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), GroupError>> + Send>>,
    protocol_type: Option<String>,
    previous: Option<String>,
}

/// Undoes memory's note that `protocol_type` is recorded, unless a later record replaced it: the
/// previous recorded type is what the log may still hold (so a drop still writes its tombstone),
/// and differing from the group's type makes the next join record it again.
fn forget_recorded(
    coordinator: &GroupCoordinator,
    group_id: &str,
    protocol_type: Option<String>,
    previous: Option<String>,
) {
    let mut groups = coordinator.lock();
    if let Some(group) = groups.groups.get_mut(group_id) {
        if group.durable_protocol_type == protocol_type {
            group.durable_protocol_type = previous;
        }
    }
}

fn admit_join(
    coordinator: &GroupCoordinator,
    group_id: String,
    join: JoinRequest,
    recorded: &mut Option<Recorded>,
) -> Reply<JoinSuccess> {
    if coordinator.is_closed() {
        return Reply::Now(Err(GroupError::CoordinatorNotAvailable));
    }
    if group_id.is_empty() {
        return Reply::Now(Err(GroupError::InvalidGroupId));
    }
    let config = &coordinator.config;
    if join.session_timeout_ms < config.session_timeout_min_ms
        || join.session_timeout_ms > config.session_timeout_max_ms
    {
        return Reply::Now(Err(GroupError::InvalidSessionTimeout(join.session_timeout_ms)));
    }
    let mut groups = coordinator.lock();
    let groups_count = groups.groups.len();
    if !groups.groups.contains_key(&group_id) {
        if !join.member_id.is_empty() {
            return Reply::Now(Err(GroupError::UnknownMemberId));
        }
        if groups_count >= config.groups_max {
            return Reply::Now(Err(GroupError::CoordinatorFull(config.groups_max, groups_count)));
        }
    }
    let groups = &mut *groups;
    let group = groups.groups.entry(group_id.clone()).or_insert_with(|| Group::new(group_id, now_ms()));
    let reply = group.join(join, config.members_per_group_max, Instant::now(), now_ms());
    if group.protocol_type.is_some() && group.protocol_type != group.durable_protocol_type {
        // Queued under the lock, so records of one group reach the log in the order of their changes.
        let record = GroupRecord {
            group: group.id.clone(),
            protocol_type: group.protocol_type.clone(),
            generation_id: group.generation_id,
        };
        let previous = std::mem::replace(&mut group.durable_protocol_type, group.protocol_type.clone());
        groups.commit_sequence += 1;
        *recorded = Some(Recorded {
            written: Box::pin(coordinator.store.append_groups(&[record], now_ms())),
            protocol_type: group.protocol_type.clone(),
            previous,
        });
    }
    reply
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::config::GroupConfig;

    /// A group record the log refuses (here: a closed log; in service, a full queue) is written by
    /// no one, so memory must not take the type as recorded: the next join has to write it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_group_record_is_not_taken_as_recorded() {
        let data = tempfile::tempdir().expect("temp dir");
        let node = CoordinatorNode { node_id: 0, host: "localhost".into(), port: 9092 };
        let coordinator = GroupCoordinator::open(GroupConfig::new(data.path(), node)).expect("open");
        coordinator.store.close().await.expect("close the offsets log");
        let join = JoinRequest {
            member_id: String::new(),
            group_instance_id: None,
            client_id: "client".into(),
            client_host: String::new(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: false,
        };
        let outcome = tokio::time::timeout(Duration::from_secs(10), coordinator.join("g", join))
            .await
            .expect("the join is answered");
        assert!(outcome.is_ok(), "the join does not depend on the record");
        let groups = coordinator.lock();
        let group = groups.groups.get("g").expect("the group");
        assert_eq!(group.protocol_type.as_deref(), Some("consumer"));
        assert_eq!(group.durable_protocol_type, None, "so the next join records the type again");
    }
}
