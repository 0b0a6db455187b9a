//! The classic group membership protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, and the
//! timer that expires sessions and ends rebalances that wait too long.
//!
//! Decisions follow Kafka's `GroupCoordinator` (the pre-KIP-848 one): fencing is checked before
//! generation, generation before state; a join waits until every known member rejoined or the
//! rebalance timeout passed; the leader's SyncGroup carries every assignment.

use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::GroupError;
use crate::group::{Group, GroupState, JoinSuccess, Member, Reply, SyncSuccess};

/// A JoinGroup, whatever the version it came in (the edge fills what older versions lack).
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// An unknown member first gets a member id with MEMBER_ID_REQUIRED (KIP-394; JoinGroup v4+).
    pub require_known_member_id: bool,
}

/// A SyncGroup, whatever the version it came in.
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

fn new_member_id(prefix: &str) -> String {
    let prefix = if prefix.is_empty() { "member" } else { prefix };
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

impl Group {
    /// JoinGroup; `members_max` bounds the members of the group.
    pub fn join(&mut self, request: JoinRequest, members_max: usize, now: Instant, now_ms: i64) -> Reply<JoinSuccess> {
        if !self.accepts_protocols(&request.protocol_type, &request.protocols) {
            return Reply::Now(Err(GroupError::InconsistentGroupProtocol));
        }
        if request.member_id.is_empty() {
            return self.join_unknown_member(request, members_max, now, now_ms);
        }
        if self.pending_members.remove(&request.member_id).is_some() {
            let member_id = request.member_id.clone();
            return self.add_member(member_id, request, members_max, now, now_ms);
        }
        if let Err(error) = self.check_member(&request.member_id, request.group_instance_id.as_deref()) {
            return Reply::Now(Err(error));
        }
        let member_id = request.member_id.clone();
        let protocols_changed =
            self.members.get(&member_id).is_some_and(|member| member.protocols != request.protocols);
        let is_leader = self.leader_id.as_deref() == Some(member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => self.wait_for_join(&member_id, request, now, now_ms),
            GroupState::CompletingRebalance if !protocols_changed => {
                Reply::Now(Ok(self.join_success(&member_id, false)))
            }
            GroupState::Stable if !protocols_changed && !is_leader => {
                Reply::Now(Ok(self.join_success(&member_id, false)))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.prepare_rebalance(now, "a member rejoined with changed protocols, or the leader rejoined");
                self.wait_for_join(&member_id, request, now, now_ms)
            }
            GroupState::Empty | GroupState::Dead => Reply::Now(Err(GroupError::UnknownMemberId)),
        }
    }

    fn join_unknown_member(
        &mut self,
        request: JoinRequest,
        members_max: usize,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinSuccess> {
        if let Some(instance_id) = request.group_instance_id.clone() {
            if let Some(old_member_id) = self.static_members.get(&instance_id).cloned() {
                return self.rejoin_static_member(old_member_id, request, members_max, now, now_ms);
            }
            return self.add_member(new_member_id(&instance_id), request, members_max, now, now_ms);
        }
        let member_id = new_member_id(&request.client_id);
        if request.require_known_member_id {
            if self.members.len() + self.pending_members.len() >= members_max {
                return Reply::Now(Err(GroupError::GroupMaxSizeReached(members_max)));
            }
            let session = std::time::Duration::from_millis(request.session_timeout_ms.max(0) as u64);
            self.pending_members.insert(member_id.clone(), now + session);
            return Reply::Now(Err(GroupError::MemberIdRequired(member_id)));
        }
        self.add_member(member_id, request, members_max, now, now_ms)
    }

    fn add_member(
        &mut self,
        member_id: String,
        request: JoinRequest,
        members_max: usize,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinSuccess> {
        if self.members.len() >= members_max {
            return Reply::Now(Err(GroupError::GroupMaxSizeReached(members_max)));
        }
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        let (waiter, receiver) = oneshot::channel();
        let mut member = Member {
            member_id: member_id.clone(),
            group_instance_id: request.group_instance_id.clone(),
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocol_type: request.protocol_type,
            protocols: request.protocols,
            assignment: Bytes::new(),
            session_deadline: now,
            join_waiter: Some(waiter),
            sync_waiter: None,
        };
        member.touch(now);
        if let Some(instance_id) = &member.group_instance_id {
            self.static_members.insert(instance_id.clone(), member_id.clone());
        }
        tracing::info!(group = %self.id, member = %member_id, instance = ?member.group_instance_id, "member joins");
        self.members.insert(member_id.clone(), member);
        if self.leader_id.is_none() {
            self.leader_id = Some(member_id);
        }
        self.prepare_rebalance(now, "a member joined");
        if self.all_members_joined() {
            self.complete_join(now, now_ms);
        }
        Reply::Wait(receiver)
    }

    /// Updates a known member from its JoinGroup and parks it until the join completes.
    fn wait_for_join(
        &mut self,
        member_id: &str,
        request: JoinRequest,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinSuccess> {
        let (waiter, receiver) = oneshot::channel();
        let Some(member) = self.members.get_mut(member_id) else {
            return Reply::Now(Err(GroupError::UnknownMemberId));
        };
        member.protocols = request.protocols;
        member.protocol_type = request.protocol_type;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.client_id = request.client_id;
        member.touch(now);
        if let Some(previous) = member.join_waiter.replace(waiter) {
            let _ = previous.send(Err(GroupError::RebalanceInProgress));
        }
        if self.all_members_joined() {
            self.complete_join(now, now_ms);
        }
        Reply::Wait(receiver)
    }

    /// A static member came back with a new process (no member id, known group.instance.id): it takes
    /// a fresh member id, the old one is fenced, and — when the group's protocol would not change — the
    /// group keeps its generation and assignment: no rebalance (KIP-345).
    fn rejoin_static_member(
        &mut self,
        old_member_id: String,
        request: JoinRequest,
        members_max: usize,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinSuccess> {
        let instance_id = request.group_instance_id.clone().unwrap_or_default();
        let Some(mut member) = self.members.remove(&old_member_id) else {
            self.static_members.remove(&instance_id);
            return self.add_member(new_member_id(&instance_id), request, members_max, now, now_ms);
        };
        let new_member_id = new_member_id(&instance_id);
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(Err(GroupError::FencedInstanceId));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(Err(GroupError::FencedInstanceId));
        }
        member.member_id = new_member_id.clone();
        self.members.insert(new_member_id.clone(), member);
        self.static_members.insert(instance_id.clone(), new_member_id.clone());
        if self.leader_id.as_deref() == Some(old_member_id.as_str()) {
            self.leader_id = Some(new_member_id.clone());
        }
        tracing::info!(group = %self.id, instance = %instance_id, old = %old_member_id, new = %new_member_id, "static member rejoined");
        let protocols = request.protocols.clone();
        if self.state == GroupState::Stable {
            let previous =
                self.members.get_mut(&new_member_id).map(|member| std::mem::replace(&mut member.protocols, protocols));
            if self.select_protocol() == self.protocol_name {
                if let Some(member) = self.members.get_mut(&new_member_id) {
                    member.touch(now);
                    member.session_timeout_ms = request.session_timeout_ms;
                    member.rebalance_timeout_ms = request.rebalance_timeout_ms;
                }
                let is_leader = self.leader_id.as_deref() == Some(new_member_id.as_str());
                return Reply::Now(Ok(self.join_success(&new_member_id, is_leader)));
            }
            if let (Some(member), Some(previous)) = (self.members.get_mut(&new_member_id), previous) {
                member.protocols = previous;
            }
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now, "a static member rejoined with a different protocol");
        }
        self.wait_for_join(&new_member_id, request, now, now_ms)
    }

    pub fn sync(&mut self, request: SyncRequest, now: Instant) -> Reply<SyncSuccess> {
        if let Err(error) = self.check_member(&request.member_id, request.group_instance_id.as_deref()) {
            return Reply::Now(Err(error));
        }
        if request.generation_id != self.generation_id {
            return Reply::Now(Err(GroupError::IllegalGeneration {
                given: request.generation_id,
                current: self.generation_id,
            }));
        }
        let type_differs =
            request.protocol_type.as_ref().is_some_and(|given| Some(given) != self.protocol_type.as_ref());
        let name_differs =
            request.protocol_name.as_ref().is_some_and(|given| Some(given) != self.protocol_name.as_ref());
        if type_differs || name_differs {
            return Reply::Now(Err(GroupError::InconsistentGroupProtocol));
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => Reply::Now(Err(GroupError::UnknownMemberId)),
            GroupState::PreparingRebalance => Reply::Now(Err(GroupError::RebalanceInProgress)),
            GroupState::Stable => {
                let Some(member) = self.members.get_mut(&request.member_id) else {
                    return Reply::Now(Err(GroupError::UnknownMemberId));
                };
                member.touch(now);
                let assignment = member.assignment.clone();
                Reply::Now(Ok(self.sync_success(assignment)))
            }
            GroupState::CompletingRebalance => self.sync_completing(request, now),
        }
    }

    fn sync_completing(&mut self, request: SyncRequest, now: Instant) -> Reply<SyncSuccess> {
        let (waiter, receiver) = oneshot::channel();
        let Some(member) = self.members.get_mut(&request.member_id) else {
            return Reply::Now(Err(GroupError::UnknownMemberId));
        };
        member.touch(now);
        member.sync_waiter = Some(waiter);
        if self.leader_id.as_deref() != Some(request.member_id.as_str()) {
            return Reply::Wait(receiver);
        }
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
        }
        for (member_id, assignment) in request.assignments {
            if let Some(member) = self.members.get_mut(&member_id) {
                member.assignment = assignment;
            }
        }
        self.state = GroupState::Stable;
        self.rebalance_deadline = None;
        tracing::info!(group = %self.id, generation = self.generation_id, members = self.members.len(), "group is stable");
        let answers: Vec<(String, SyncSuccess)> = self
            .members
            .values()
            .map(|member| (member.member_id.clone(), self.sync_success(member.assignment.clone())))
            .collect();
        for (member_id, success) in answers {
            if let Some(waiter) = self.members.get_mut(&member_id).and_then(|member| member.sync_waiter.take()) {
                let _ = waiter.send(Ok(success));
            }
        }
        Reply::Wait(receiver)
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        self.check_member(member_id, group_instance_id)?;
        if generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration { given: generation_id, current: self.generation_id });
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.touch(now);
        }
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
        }
    }

    /// LeaveGroup for one member: by instance id when given (the member id may then be empty).
    pub fn leave(&mut self, member_id: &str, group_instance_id: Option<&str>) -> Result<(), GroupError> {
        let holder = match group_instance_id {
            Some(instance_id) => match self.static_members.get(instance_id) {
                Some(holder) if member_id.is_empty() || holder == member_id => holder.clone(),
                Some(_) => return Err(GroupError::FencedInstanceId),
                None => return Err(GroupError::UnknownMemberId),
            },
            None if self.pending_members.remove(member_id).is_some() => return Ok(()),
            None if self.members.contains_key(member_id) => member_id.to_string(),
            None => return Err(GroupError::UnknownMemberId),
        };
        tracing::info!(group = %self.id, member = %holder, "member leaves");
        self.remove_member(&holder);
        Ok(())
    }

    /// Expires pending member ids and dead sessions, and ends rebalance phases past their deadline.
    pub fn tick(&mut self, now: Instant, now_ms: i64) {
        self.pending_members.retain(|_, deadline| *deadline > now);
        let dead: Vec<String> = self
            .members
            .values()
            .filter(|member| {
                member.join_waiter.is_none() && member.sync_waiter.is_none() && member.session_deadline <= now
            })
            .map(|member| member.member_id.clone())
            .collect();
        for member_id in &dead {
            tracing::info!(group = %self.id, member = %member_id, "session timed out; member removed");
            self.remove_member(member_id);
        }
        if !dead.is_empty() {
            self.after_member_gone(now, now_ms);
        }
        let overdue = self.rebalance_deadline.is_some_and(|deadline| deadline <= now);
        match self.state {
            GroupState::PreparingRebalance if overdue || self.all_members_joined() => self.complete_join(now, now_ms),
            GroupState::CompletingRebalance if overdue => {
                let unsynced: Vec<String> = self
                    .members
                    .values()
                    .filter(|member| member.sync_waiter.is_none())
                    .map(|member| member.member_id.clone())
                    .collect();
                for member_id in &unsynced {
                    tracing::info!(group = %self.id, member = %member_id, "no SyncGroup within the rebalance timeout; member removed");
                    self.remove_member(member_id);
                }
                self.prepare_rebalance(now, "the leader did not assign in time");
                if self.all_members_joined() {
                    self.complete_join(now, now_ms);
                }
            }
            _ => {}
        }
    }
}
