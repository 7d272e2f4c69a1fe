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
//! - [`groups`]: consumer-group offset sync, and MM2-compatible checkpoint records.
//! - [`cli`]: argument parsing and the `run` / `check` commands that tie the rest together.

pub mod cli;
pub mod client;
pub mod config;
pub mod failover;
pub mod groups;
pub mod protocol;
pub mod replicate;
pub mod topics;
