//! Consumer-group offset sync: carrying the offsets groups commit on the source over to the
//! target, translated through the offset map, so a group can switch clusters and continue at
//! exactly the next record. Also writes MM2-compatible checkpoints for Java tooling.

pub mod checkpoint;
