//! Consumer-group offset sync: a flow's source groups get their committed offsets
//! translated exactly through the offset map and committed on the target, so consumers
//! switch clusters and continue at the next record.

pub mod sync;
pub mod translate;
