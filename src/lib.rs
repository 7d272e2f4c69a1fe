//! kferry: a Kafka-to-Kafka replicator that speaks the Kafka wire protocol itself.
//!
//! The crate is layered so that each layer only calls the one below it:
//!
//! - [`protocol`]: bytes only, no I/O. Framing, request/response headers, API version
//!   negotiation rules, the record-batch header view, the Kafka error-code table.
//! - [`client`]: sockets. One [`client::Messenger`] per broker connection (pipelined,
//!   bounded), the broker pool and metadata cache ([`client::Cluster`]), and the calls
//!   kferry makes. It knows nothing of flows or replication policy.
//! - [`config`]: the YAML configuration, its types and validation. No network.
//! - [`topics`]: which source topics a flow replicates and what they are called on the
//!   target (pure functions).
//! - [`replicate`]: the hot path (fetch, forward, transactional produce), the offset map
//!   and kferry's state topics on the target.
//! - [`groups`]: consumer-group offset sync, and MM2-compatible checkpoint records.
//! - [`recovery`]: failover and failback, as plans and their execution.
//! - [`flow`]: one flow's tasks supervised: connecting, topic sync, the shards'
//!   replicators, group offset sync, the failover guard.
//! - [`membership`]: several `kferry run` processes sharing the flows' shards through
//!   Kafka's group protocol (assignment, the member loop).
//! - [`metrics`]: counters, gauges and histograms of every flow, their Prometheus text,
//!   and the `/metrics`, `/healthz` and `/readyz` listener.
//! - [`cli`]: argument parsing and the commands (`run`, `check`, `plan`, `offsets`,
//!   `failover`, `failback`) that tie the rest together.

pub mod cli;
pub mod client;
pub mod config;
pub mod flow;
pub mod groups;
pub mod membership;
pub mod metrics;
pub mod protocol;
pub mod recovery;
pub mod replicate;
pub mod topics;
