//! Consumer-group offset sync: a flow's source groups get their committed offsets
//! translated exactly through the offset map and committed on the target, so consumers
//! switch clusters and continue at the next record. Checkpoints in MM2's format are written
//! beside them for Java tooling (`RemoteClusterUtils.translateOffsets`).

pub mod checkpoint;
pub mod sync;
pub mod translate;
