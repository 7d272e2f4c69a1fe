//! Replication of records: the hot path.
//!
//! - [`forward`]: which fetched batches go to the target and how their headers are
//!   stamped with kferry's producer (pure).
//! - [`coalesce`]: runs of small batches of a partition merged into one before they are
//!   produced, each record's source offset kept (pure).
//! - [`offset_map`]: source-to-target offsets as segments of constant delta (pure).
//! - [`rewrite`]: the slow path: batches the target refuses as they are (compacted,
//!   LogAppendTime) decoded, renumbered/retimed and recompressed with their codec (pure).
//! - [`state`]: the offset map persisted on the target, in the data's transaction.
//! - [`shard`]: which of a flow's shards (each its own replicator and transactional id)
//!   replicates a partition (pure).
//! - [`engine`]: one flow's replicator: fetch from the source leaders, produce to the
//!   target leaders, and commit progress (in one transaction with `exactly_once`).

pub mod coalesce;
pub mod engine;
pub mod forward;
pub mod offset_map;
pub mod rewrite;
pub mod shard;
pub mod state;
