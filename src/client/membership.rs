//! Kafka's classic group membership protocol, as a member speaks it: JoinGroup, SyncGroup,
//! Heartbeat and LeaveGroup, plus DescribeGroups to read a group's members and what each
//! was assigned. The protocol type and the bytes of metadata and assignments are the
//! caller's (kferry's own, see [`crate::membership`]); this module only carries them.
//!
//! Each call is one attempt: the membership loop decides what an error means (rejoin,
//! start over as a new member, wait for the coordinator), because the right answer depends
//! on where it is in the protocol and a blind retry could outlive the session timeout.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DescribeGroupsRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::cluster::Cluster;
use super::coordinator::CoordinatorKind;
use super::error::{BrokerRef, ClientError};
use crate::protocol::error_code::{ErrorCode, ResponseError};

/// Who a member is in its group: the id the coordinator gave it, and its static name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Empty before the first JoinGroup.
    pub member_id: String,
    /// `group.instance.id` (KIP-345), for static members.
    pub instance_id: Option<String>,
}

/// What a member asks for in JoinGroup: its one protocol and the metadata it sends with it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group: String,
    pub member: Member,
    pub session_timeout: Duration,
    /// How long the coordinator waits for every member to rejoin; also how long the
    /// JoinGroup answer may take.
    pub rebalance_timeout: Duration,
    pub protocol_type: &'static str,
    pub protocol_name: &'static str,
    pub metadata: Bytes,
}

/// One member as the leader learns it from JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub metadata: Bytes,
}

/// A generation joined.
#[derive(Debug, Clone)]
pub struct Joined {
    pub generation: i32,
    pub member_id: String,
    pub leader_id: String,
    /// Every member with its metadata; empty unless this member is the leader.
    pub members: Vec<JoinedMember>,
}

impl Joined {
    pub fn is_leader(&self) -> bool {
        self.member_id == self.leader_id
    }
}

/// How one JoinGroup request ended without an error.
#[derive(Debug, Clone)]
enum JoinOutcome {
    Joined(Joined),
    /// A new dynamic member must join again with the id the coordinator chose (KIP-394).
    MemberIdRequired(String),
}

/// A member of a group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_host: String,
    pub assignment: Bytes,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty`, `Dead`.
    pub state: String,
    pub protocol_type: String,
    pub members: Vec<DescribedMember>,
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn group_id(group: &str) -> GroupId {
    GroupId(text(group))
}

impl Cluster {
    /// JoinGroup: waits, up to the rebalance timeout, for the coordinator to gather every
    /// member of the next generation. A new dynamic member is first handed an id and asked
    /// to join again with it (KIP-394): done here, once.
    pub async fn join_group(&self, join: &JoinRequest) -> Result<Joined, ClientError> {
        let mut member_id = join.member.member_id.clone();
        for attempt in 0..2 {
            match self.join_group_once(join, &member_id).await? {
                (_, JoinOutcome::Joined(joined)) => return Ok(joined),
                (broker, JoinOutcome::MemberIdRequired(id)) => {
                    if attempt == 1 {
                        let code = ErrorCode(ResponseError::MemberIdRequired);
                        return Err(ClientError::Group { broker, api: "JoinGroup", group: join.group.clone(), code });
                    }
                    member_id = id;
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    async fn join_group_once(
        &self,
        join: &JoinRequest,
        member_id: &str,
    ) -> Result<(BrokerRef, JoinOutcome), ClientError> {
        let coordinator = self.coordinator(CoordinatorKind::Group, &join.group).await?;
        let protocol = JoinGroupRequestProtocol::default()
            .with_name(text(join.protocol_name))
            .with_metadata(join.metadata.clone());
        let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
        let build = |version: i16| {
            let request = JoinGroupRequest::default()
                .with_group_id(group_id(&join.group))
                .with_session_timeout_ms(millis(join.session_timeout))
                .with_member_id(text(member_id))
                .with_protocol_type(text(join.protocol_type))
                .with_protocols(vec![protocol.clone()]);
            let request =
                if version >= 1 { request.with_rebalance_timeout_ms(millis(join.rebalance_timeout)) } else { request };
            if version >= 5 {
                request.with_group_instance_id(join.member.instance_id.as_deref().map(text))
            } else {
                request
            }
        };
        let version = coordinator.version_for::<JoinGroupRequest>().map_err(ClientError::from)?;
        // The answer comes when the rebalance completes, so the wait is the rebalance
        // timeout, not the request timeout.
        let wait = join.rebalance_timeout + coordinator.request_timeout();
        let (_, response) = coordinator.request_with_timeout(&build(version), wait).await?;
        let broker = coordinator.broker().clone();
        if response.error_code == ResponseError::MemberIdRequired.code() {
            return Ok((broker, JoinOutcome::MemberIdRequired(response.member_id.to_string())));
        }
        self.check_group_code(&join.group, &broker, "JoinGroup", response.error_code)?;
        let joined = Joined {
            generation: response.generation_id,
            member_id: response.member_id.to_string(),
            leader_id: response.leader.to_string(),
            members: response
                .members
                .into_iter()
                .map(|m| JoinedMember { member_id: m.member_id.to_string(), metadata: m.metadata })
                .collect(),
        };
        Ok((broker, JoinOutcome::Joined(joined)))
    }

    /// SyncGroup: the leader sends every member's assignment, every member gets its own.
    pub async fn sync_group(
        &self,
        group: &str,
        generation: i32,
        member: &Member,
        protocol: (&'static str, &'static str),
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Bytes, ClientError> {
        let coordinator = self.coordinator(CoordinatorKind::Group, group).await?;
        let assignments: Vec<SyncGroupRequestAssignment> = assignments
            .into_iter()
            .map(|(member_id, assignment)| {
                SyncGroupRequestAssignment::default().with_member_id(text(&member_id)).with_assignment(assignment)
            })
            .collect();
        let build = |version: i16| {
            let request = SyncGroupRequest::default()
                .with_group_id(group_id(group))
                .with_generation_id(generation)
                .with_member_id(text(&member.member_id))
                .with_assignments(assignments.clone());
            let request = if version >= 3 {
                request.with_group_instance_id(member.instance_id.as_deref().map(text))
            } else {
                request
            };
            if version >= 5 {
                request.with_protocol_type(Some(text(protocol.0))).with_protocol_name(Some(text(protocol.1)))
            } else {
                request
            }
        };
        let version = coordinator.version_for::<SyncGroupRequest>().map_err(ClientError::from)?;
        // The coordinator answers the followers once the leader's assignment arrived.
        let (_, response) =
            coordinator.request_with_timeout(&build(version), coordinator.request_timeout() * 2).await?;
        self.check_group_code(group, coordinator.broker(), "SyncGroup", response.error_code)?;
        Ok(response.assignment)
    }

    /// Heartbeat: keeps the member in its generation; REBALANCE_IN_PROGRESS asks it to
    /// join again.
    pub async fn heartbeat(&self, group: &str, generation: i32, member: &Member) -> Result<(), ClientError> {
        let coordinator = self.coordinator(CoordinatorKind::Group, group).await?;
        let build = |version: i16| {
            let request = HeartbeatRequest::default()
                .with_group_id(group_id(group))
                .with_generation_id(generation)
                .with_member_id(text(&member.member_id));
            if version >= 3 {
                request.with_group_instance_id(member.instance_id.as_deref().map(text))
            } else {
                request
            }
        };
        let (_, response) = coordinator.request_built(build).await?;
        self.check_group_code(group, coordinator.broker(), "Heartbeat", response.error_code)
    }

    /// LeaveGroup: the coordinator rebalances at once instead of waiting for the session
    /// timeout.
    pub async fn leave_group(&self, group: &str, member: &Member) -> Result<(), ClientError> {
        let coordinator = self.coordinator(CoordinatorKind::Group, group).await?;
        let build = |version: i16| {
            let request = LeaveGroupRequest::default().with_group_id(group_id(group));
            if version >= 3 {
                request.with_members(vec![MemberIdentity::default()
                    .with_member_id(text(&member.member_id))
                    .with_group_instance_id(member.instance_id.as_deref().map(text))])
            } else {
                request.with_member_id(text(&member.member_id))
            }
        };
        let (_, response) = coordinator.request_built(build).await?;
        self.check_group_code(group, coordinator.broker(), "LeaveGroup", response.error_code)?;
        for left in &response.members {
            self.check_group_code(group, coordinator.broker(), "LeaveGroup", left.error_code)?;
        }
        Ok(())
    }

    /// DescribeGroups of one group: its state and members with their assignments.
    pub async fn describe_group(&self, group: &str) -> Result<DescribedGroup, ClientError> {
        self.retrying(|| async {
            let coordinator = self.coordinator(CoordinatorKind::Group, group).await?;
            let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
            let (_, response) = coordinator.request(&request).await?;
            let Some(described) = response.groups.into_iter().next() else {
                return Ok(DescribedGroup { state: "Dead".into(), protocol_type: String::new(), members: Vec::new() });
            };
            self.check_group_code(group, coordinator.broker(), "DescribeGroups", described.error_code)?;
            Ok(DescribedGroup {
                state: described.group_state.to_string(),
                protocol_type: described.protocol_type.to_string(),
                members: described
                    .members
                    .into_iter()
                    .map(|m| DescribedMember {
                        member_id: m.member_id.to_string(),
                        instance_id: m.group_instance_id.map(|i| i.to_string()),
                        client_host: m.client_host.to_string(),
                        assignment: m.member_assignment,
                    })
                    .collect(),
            })
        })
        .await
    }
}
