//! Disaster recovery: failover (a flow's target takes over from its source) and failback
//! (the data written meanwhile goes back, and the pair returns to where it started), and
//! the status an operator reads before either ([`status`]).
//!
//! Policy over the pieces other modules own: the flow's progress and offset maps
//! (`replicate::state`), group translation (`groups`), fencing by transactional id, and the
//! failover record that keeps a fenced flow stopped ([`marker`]). Every operation is first
//! computed as a plan, printed by `--dry-run`, and the real run executes that same plan.

pub mod failback;
pub mod failover;
pub mod fence;
pub mod marker;
pub mod status;
