//! The bytes kferry members exchange through the group coordinator: each member's metadata
//! in JoinGroup (the shards it runs, and the layout of shards its configuration gives) and
//! each member's assignment in SyncGroup. JSON, versioned, so `kferry status` and a person
//! with `kafka-consumer-groups --describe --verbose` can read it too.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Unit;
use crate::config::Config;

/// The protocol type of kferry's groups (Connect's is `connect`, consumers' `consumer`).
pub const PROTOCOL_TYPE: &str = "kferry";
/// The one assignment protocol members offer.
pub const PROTOCOL_NAME: &str = "shards-v1";
const VERSION: u16 = 1;

/// What a member tells the leader when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMetadata {
    pub version: u16,
    /// Every flow and its shard count, as this member's configuration has them: members
    /// must agree on it to share shards.
    pub layout: String,
    /// The shards it replicates right now.
    pub owned: BTreeSet<Unit>,
}

/// What the leader gives a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAssignment {
    pub version: u16,
    /// The leader's member id, for `status`.
    pub leader: String,
    pub units: BTreeSet<Unit>,
    /// Why the member gets nothing (its configuration differs from the leader's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Why bytes from the group could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read kferry group {what}: {reason}")]
pub struct WireError {
    what: &'static str,
    reason: String,
}

/// The shard layout of `config`: `flow:shards` of every flow, in config order.
pub fn layout(config: &Config) -> String {
    config.flows.iter().map(|flow| format!("{}:{}", flow.name(), flow.shards.max(1))).collect::<Vec<_>>().join(",")
}

impl MemberMetadata {
    pub fn new(layout: String, owned: BTreeSet<Unit>) -> Self {
        Self { version: VERSION, layout, owned }
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("serialisable"))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        serde_json::from_slice(bytes).map_err(|e| WireError { what: "member metadata", reason: e.to_string() })
    }
}

impl MemberAssignment {
    pub fn new(leader: &str, units: BTreeSet<Unit>, refused: Option<String>) -> Self {
        Self { version: VERSION, leader: leader.to_string(), units, refused }
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("serialisable"))
    }

    /// An empty assignment (a member the coordinator answers before the leader assigned
    /// anything, or after a rebalance it was left out of) is no shards.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.is_empty() {
            return Ok(Self::new("", BTreeSet::new(), None));
        }
        serde_json::from_slice(bytes).map_err(|e| WireError { what: "assignment", reason: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_assignments_round_trip() {
        let owned: BTreeSet<Unit> = [Unit { flow: "a->b".into(), shard: 2 }].into();
        let metadata = MemberMetadata::new("a->b:4".into(), owned.clone());
        assert_eq!(MemberMetadata::decode(&metadata.encode()).unwrap(), metadata);
        let assignment = MemberAssignment::new("member-1", owned, None);
        assert_eq!(MemberAssignment::decode(&assignment.encode()).unwrap(), assignment);
        assert!(MemberAssignment::decode(b"").unwrap().units.is_empty());
        assert!(MemberMetadata::decode(b"{").unwrap_err().to_string().contains("member metadata"));
    }
}
