//! One consumer group's state: members, generation, chosen protocol, committed offsets.
//!
//! The join/sync state machine lives in [`crate::membership`]; this module holds the data and the
//! transitions both the handlers and the timer use (start a rebalance, complete a join, remove a
//! member).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::GroupError;
use crate::records::CommittedOffset;
use crate::transactions::PendingOffsets;

/// Kafka's group states, spelled as DescribeGroups and ListGroups report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A member as the leader sees it in a JoinGroup response.
#[derive(Debug, Clone)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// A successful JoinGroup.
#[derive(Debug, Clone)]
pub struct JoinSuccess {
    pub generation_id: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub leader_id: String,
    pub member_id: String,
    /// Every member's metadata for the chosen protocol: for the leader only.
    pub members: Vec<JoinedMember>,
    /// The leader already has a valid assignment (a static leader rejoined): JoinGroup v9+ says so.
    pub skip_assignment: bool,
}

/// A successful SyncGroup.
#[derive(Debug, Clone)]
pub struct SyncSuccess {
    pub protocol_type: String,
    pub protocol_name: String,
    pub assignment: Bytes,
}

pub type JoinResult = Result<JoinSuccess, GroupError>;
pub type SyncResult = Result<SyncSuccess, GroupError>;

/// What a handler gets back from the state machine: an answer now, or one to wait for.
pub enum Reply<T> {
    Now(Result<T, GroupError>),
    Wait(oneshot::Receiver<Result<T, GroupError>>),
}

impl<T> Reply<T> {
    /// The answer; a waiter whose member vanished (removed, group deleted) gets UNKNOWN_MEMBER_ID.
    pub async fn resolve(self) -> Result<T, GroupError> {
        match self {
            Reply::Now(result) => result,
            Reply::Wait(receiver) => receiver.await.unwrap_or(Err(GroupError::UnknownMemberId)),
        }
    }
}

pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// Past this instant without a heartbeat (or a join/sync in progress) the member is dead.
    pub session_deadline: Instant,
    pub join_waiter: Option<oneshot::Sender<JoinResult>>,
    pub sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    pub fn touch(&mut self, now: Instant) {
        self.session_deadline = now + Duration::from_millis(self.session_timeout_ms.max(0) as u64);
    }

    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }

    fn fail_waiters(&mut self, error: GroupError) {
        if let Some(waiter) = self.join_waiter.take() {
            let _ = waiter.send(Err(error.clone()));
        }
        if let Some(waiter) = self.sync_waiter.take() {
            let _ = waiter.send(Err(error));
        }
    }
}

/// A committed offset with the commit sequence that wrote it: a commit applies only over an older one,
/// so concurrent commits of one partition end as the log orders them.
#[derive(Debug, Clone)]
pub struct StoredOffset {
    pub committed: CommittedOffset,
    pub sequence: u64,
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation_id: i32,
    /// Set by the first member to join an empty group and kept when the group empties again, as Kafka
    /// keeps it: tools tell a consumer group ("consumer") from one that only holds offsets (none).
    pub protocol_type: Option<String>,
    /// The protocol type the offsets log last recorded for the group (a group metadata record), so
    /// that a join writes one only when the type changes.
    pub durable_protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id → member id of the static member holding it.
    pub static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, valid until their deadline.
    pub pending_members: HashMap<String, Instant>,
    /// When the current PreparingRebalance or CompletingRebalance phase gives up on laggards.
    pub rebalance_deadline: Option<Instant>,
    pub offsets: HashMap<(String, i32), StoredOffset>,
    /// Transactional offsets not yet committed or aborted, by producer id: invisible to OffsetFetch
    /// until the producer's commit marker (`crate::transactions`).
    pub pending_offsets: PendingOffsets,
    /// Wall-clock ms when the group last became empty (offset expiry counts from here).
    pub empty_since_ms: i64,
}

impl Group {
    pub fn new(id: String, now_ms: i64) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            durable_protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            rebalance_deadline: None,
            offsets: HashMap::new(),
            pending_offsets: PendingOffsets::default(),
            empty_since_ms: now_ms,
        }
    }

    /// The protocol for the next generation, as Kafka picks it: among the protocols every member
    /// supports, each member votes for its most preferred; most votes wins, ties go to the first
    /// member's order.
    pub fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| self.members.values().all(|member| member.supports(name)))
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|candidate| (0usize, *candidate)).collect();
        for member in self.members.values() {
            if let Some((name, _)) = member.protocols.iter().find(|(name, _)| candidates.contains(&name)) {
                if let Some(entry) = votes.iter_mut().find(|(_, candidate)| *candidate == name) {
                    entry.0 += 1;
                }
            }
        }
        // Highest vote count wins; ties go to the earlier candidate (max_by_key keeps the last max).
        votes.iter().rev().max_by_key(|(count, _)| *count).map(|(_, name)| (*name).clone())
    }

    /// Whether a joining member with these protocols can be in this group.
    pub fn accepts_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocols.is_empty() || protocol_type.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref().is_some_and(|current| current != protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| self.members.values().all(|member| member.supports(name)))
    }

    /// Moves to PreparingRebalance: pending syncs fail with REBALANCE_IN_PROGRESS, assignments reset.
    pub fn prepare_rebalance(&mut self, now: Instant, reason: &str) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(Err(GroupError::RebalanceInProgress));
                }
            }
        }
        let timeout_ms =
            self.members.values().map(|member| member.rebalance_timeout_ms.max(0)).max().unwrap_or(0) as u64;
        self.rebalance_deadline = Some(now + Duration::from_millis(timeout_ms));
        self.state = GroupState::PreparingRebalance;
        tracing::info!(group = %self.id, generation = self.generation_id, reason, "preparing rebalance");
    }

    pub fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|member| member.join_waiter.is_some())
    }

    /// Ends PreparingRebalance: drops members that did not rejoin, starts the next generation and answers
    /// every waiting join (the leader gets all members' metadata).
    pub fn complete_join(&mut self, now: Instant, now_ms: i64) {
        assert_eq!(self.state, GroupState::PreparingRebalance, "a join completes only while preparing a rebalance");
        let laggards: Vec<String> = self
            .members
            .values()
            .filter(|member| member.join_waiter.is_none())
            .map(|member| member.member_id.clone())
            .collect();
        for member_id in laggards {
            tracing::info!(group = %self.id, member = %member_id, "member did not rejoin in time; removed");
            self.remove_member(&member_id);
        }
        self.pending_members.clear();
        self.generation_id = self.generation_id.wrapping_add(1).max(1);
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.become_empty(now_ms);
            return;
        }
        let Some(protocol) = self.select_protocol() else {
            // accepts_protocols keeps a common protocol; losing one is a bug. Fail the joins, start over.
            tracing::error!(group = %self.id, "no common protocol at join completion");
            for member in self.members.values_mut() {
                member.fail_waiters(GroupError::InconsistentGroupProtocol);
            }
            self.members.clear();
            self.static_members.clear();
            self.become_empty(now_ms);
            return;
        };
        self.protocol_name = Some(protocol);
        self.state = GroupState::CompletingRebalance;
        let timeout_ms =
            self.members.values().map(|member| member.rebalance_timeout_ms.max(0)).max().unwrap_or(0) as u64;
        self.rebalance_deadline = Some(now + Duration::from_millis(timeout_ms));
        if self.leader_id.as_ref().is_none_or(|leader| !self.members.contains_key(leader)) {
            self.leader_id = self.members.keys().next().cloned();
        }
        tracing::info!(group = %self.id, generation = self.generation_id, members = self.members.len(), protocol = ?self.protocol_name, "join complete; awaiting the leader's assignment");
        let member_ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in member_ids {
            let success = self.join_success(&member_id, false);
            if let Some(member) = self.members.get_mut(&member_id) {
                member.touch(now);
                if let Some(waiter) = member.join_waiter.take() {
                    let _ = waiter.send(Ok(success));
                }
            }
        }
    }

    /// The JoinGroup answer for `member_id` in the current generation.
    pub fn join_success(&self, member_id: &str, skip_assignment: bool) -> JoinSuccess {
        let protocol_name = self.protocol_name.clone().unwrap_or_default();
        let leader_id = self.leader_id.clone().unwrap_or_default();
        let members = if leader_id == member_id {
            self.members
                .values()
                .map(|member| JoinedMember {
                    member_id: member.member_id.clone(),
                    group_instance_id: member.group_instance_id.clone(),
                    metadata: member.metadata_for(&protocol_name),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinSuccess {
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name,
            leader_id,
            member_id: member_id.to_string(),
            members,
            skip_assignment,
        }
    }

    pub fn sync_success(&self, assignment: Bytes) -> SyncSuccess {
        SyncSuccess {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: self.protocol_name.clone().unwrap_or_default(),
            assignment,
        }
    }

    /// Removes a member; its waiters learn UNKNOWN_MEMBER_ID. Does not start a rebalance.
    pub fn remove_member(&mut self, member_id: &str) {
        if let Some(mut member) = self.members.remove(member_id) {
            member.fail_waiters(GroupError::UnknownMemberId);
            if let Some(instance_id) = &member.group_instance_id {
                if self.static_members.get(instance_id).is_some_and(|holder| holder == member_id) {
                    self.static_members.remove(instance_id);
                }
            }
        }
        if self.leader_id.as_deref() == Some(member_id) {
            self.leader_id = self.members.keys().next().cloned();
        }
    }

    /// After a member left or died: rebalance, or finish the one in progress if the rest have joined.
    pub fn after_member_gone(&mut self, now: Instant, now_ms: i64) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, "member left or expired")
            }
            GroupState::PreparingRebalance => {}
            GroupState::Empty | GroupState::Dead => return,
        }
        if self.all_members_joined() {
            self.complete_join(now, now_ms);
        }
    }

    fn become_empty(&mut self, now_ms: i64) {
        self.state = GroupState::Empty;
        self.leader_id = None;
        self.protocol_name = None;
        self.rebalance_deadline = None;
        self.empty_since_ms = now_ms;
        tracing::info!(group = %self.id, generation = self.generation_id, "group is empty");
    }

    /// Checks a member id and instance id the way every member request does (static fencing first).
    pub fn check_member(&self, member_id: &str, group_instance_id: Option<&str>) -> Result<(), GroupError> {
        if let Some(instance_id) = group_instance_id {
            if let Some(holder) = self.static_members.get(instance_id) {
                if holder != member_id {
                    return Err(GroupError::FencedInstanceId);
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        Ok(())
    }

    /// Whether the group, or the offsets it holds, should be forgotten.
    pub fn is_disposable(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.offsets.is_empty()
            && self.pending_offsets.is_empty()
            && self.pending_members.is_empty()
    }
}
