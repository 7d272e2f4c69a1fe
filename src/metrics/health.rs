//! The answers of `/healthz` and `/readyz`, computed from the registry.
//!
//! Health is about the process: every flow that still runs has turned its loop recently (a
//! wedged loop is what a restart cures). Readiness is about DR being safe right now: every
//! flow replicating, both its clusters reachable, no partition stalled or waiting for a
//! leader. The body says which flow, cluster and partitions are the cause.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{lock, FlowState, PartitionPhase, Registry};

/// A running flow's loop that has not turned for this long is taken as wedged: well above
/// the longest a single call may retry (10 attempts, each up to a 10 s connect timeout and
/// a 5 s backoff), so a cluster outage alone never fails the liveness probe (a restart
/// would not bring the cluster back).
const HEARTBEAT_STALE_MS: u64 = 5 * 60_000;

#[derive(Debug, Serialize)]
pub struct Health {
    pub healthy: bool,
    /// Flows whose loop has not turned for over five minutes.
    pub wedged: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub flows: Vec<FlowReadiness>,
}

#[derive(Debug, Serialize)]
pub struct FlowReadiness {
    pub flow: String,
    pub state: &'static str,
    pub ready: bool,
    /// Why the flow stopped, or what it waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub unreachable_clusters: Vec<Unreachable>,
    /// Partitions not replicating.
    pub partitions: Vec<PartitionNotReady>,
}

#[derive(Debug, Serialize)]
pub struct Unreachable {
    pub cluster: String,
    pub role: &'static str,
    /// What found it unreachable: connect, fetch, produce or topic_sync.
    pub seen_by: &'static str,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct PartitionNotReady {
    pub topic: String,
    pub partition: i32,
    pub state: &'static str,
    pub reason: &'static str,
    /// What stopped it, in the engine's words (the error the target or source answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub(super) fn health(registry: &Registry) -> Health {
    let now = registry.millis();
    let wedged: Vec<String> = registry
        .flows()
        .iter()
        .filter(|f| f.state() != FlowState::Stopped)
        .filter(|f| now.saturating_sub(f.heartbeat.load(Ordering::Relaxed)) > HEARTBEAT_STALE_MS)
        .map(|f| f.name.clone())
        .collect();
    Health { healthy: wedged.is_empty(), wedged }
}

pub(super) fn readiness(registry: &Registry) -> Readiness {
    let flows: Vec<FlowReadiness> = registry
        .flows()
        .iter()
        .map(|flow| {
            let state = flow.state();
            let unreachable: Vec<Unreachable> = lock(&flow.unreachable)
                .iter()
                .map(|(&(side, probe), reason)| Unreachable {
                    cluster: flow.cluster(side).to_string(),
                    role: side.role(),
                    seen_by: probe.name(),
                    reason: reason.clone(),
                })
                .collect();
            let partitions: Vec<PartitionNotReady> = flow
                .partitions()
                .into_iter()
                .filter(|(_, p)| p.active() && p.phase() != PartitionPhase::Replicating)
                .map(|((topic, partition), p)| {
                    let phase = p.phase();
                    PartitionNotReady {
                        topic,
                        partition,
                        state: phase.state(),
                        reason: phase.reason(),
                        error: p.error(),
                    }
                })
                .collect();
            let ready = state == FlowState::Replicating && unreachable.is_empty() && partitions.is_empty();
            FlowReadiness {
                flow: flow.name.clone(),
                state: state.name(),
                ready,
                detail: flow.state_detail(),
                unreachable_clusters: unreachable,
                partitions,
            }
        })
        .collect();
    Readiness { ready: flows.iter().all(|f| f.ready), flows }
}
