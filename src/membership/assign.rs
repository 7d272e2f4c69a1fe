//! The group leader's assignment: every flow's shards over the members, balanced, sticky,
//! and cooperative (KIP-429's rule): a shard still owned by one member is never handed to
//! another in the same generation. Its owner is told to drop it, stops it, and joins again;
//! the next generation hands it to its new member. So two processes never replicate one
//! shard at once, even for a moment, and a shard that does not move is never stopped.
//! Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use super::Unit;

/// A member as the leader sees it in JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub member_id: String,
    /// The shards it replicates now (what it said in its metadata).
    pub owned: BTreeSet<Unit>,
    /// Whether its configuration describes the same shards as the leader's; a member that
    /// does not is given nothing (it would replicate what the leader does not know).
    pub compatible: bool,
}

/// What each member is given now (every member is in the map, maybe with nothing), and
/// the balanced target those grants move towards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub now: BTreeMap<String, BTreeSet<Unit>>,
    /// Shards that wait for their previous owner to drop them, by the member they go to.
    pub pending: BTreeMap<String, BTreeSet<Unit>>,
}

/// Assigns `units` to `members`: every compatible member ends with the same number of
/// shards, give or take one, keeping what it owns where it can.
pub fn assign(units: &BTreeSet<Unit>, members: &[Candidate]) -> Assignment {
    let mut now: BTreeMap<String, BTreeSet<Unit>> =
        members.iter().map(|m| (m.member_id.clone(), BTreeSet::new())).collect();
    let mut pending: BTreeMap<String, BTreeSet<Unit>> = BTreeMap::new();
    let mut eligible: Vec<&Candidate> = members.iter().filter(|m| m.compatible).collect();
    eligible.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    // The current owner of each unit: the first member (by id) that claims it, so a unit
    // two members claim (one of them a zombie) has one answer.
    let mut owner: BTreeMap<&Unit, &str> = BTreeMap::new();
    let mut sorted: Vec<&Candidate> = members.iter().collect();
    sorted.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    for member in &sorted {
        for unit in member.owned.iter().filter(|u| units.contains(*u)) {
            owner.entry(unit).or_insert(member.member_id.as_str());
        }
    }
    if eligible.is_empty() {
        return Assignment { now, pending };
    }
    let target = balanced(units, &eligible, &owner);
    for (member, wanted) in target {
        for unit in wanted {
            match owner.get(&unit) {
                Some(current) if *current != member.as_str() => {
                    pending.entry(member.clone()).or_default().insert(unit);
                }
                _ => {
                    now.entry(member.clone()).or_default().insert(unit);
                }
            }
        }
    }
    Assignment { now, pending }
}

/// The balanced target: members keep what they own up to their share, the rest goes to
/// whoever has least.
fn balanced(
    units: &BTreeSet<Unit>,
    eligible: &[&Candidate],
    owner: &BTreeMap<&Unit, &str>,
) -> BTreeMap<String, BTreeSet<Unit>> {
    let share = units.len() / eligible.len();
    let mut larger_shares = units.len() % eligible.len();
    let kept = |member: &Candidate| -> Vec<Unit> {
        member.owned.iter().filter(|u| owner.get(u).is_some_and(|o| *o == member.member_id)).cloned().collect()
    };
    // Members keeping most go first, so the larger shares go to those who already hold them.
    let mut order: Vec<(&Candidate, Vec<Unit>)> = eligible.iter().map(|m| (*m, kept(m))).collect();
    order.sort_by(|(a, ka), (b, kb)| kb.len().cmp(&ka.len()).then_with(|| a.member_id.cmp(&b.member_id)));
    let mut target: BTreeMap<String, BTreeSet<Unit>> = BTreeMap::new();
    let mut placed: BTreeSet<Unit> = BTreeSet::new();
    for (member, keep) in order {
        let cap = if larger_shares > 0 && keep.len() > share {
            larger_shares -= 1;
            share + 1
        } else {
            share
        };
        let keep: BTreeSet<Unit> = keep.into_iter().take(cap).collect();
        placed.extend(keep.iter().cloned());
        target.insert(member.member_id.clone(), keep);
    }
    for unit in units.iter().filter(|u| !placed.contains(*u)) {
        let (member, _) = target
            .iter()
            .min_by(|(a, ua), (b, ub)| ua.len().cmp(&ub.len()).then_with(|| a.cmp(b)))
            .expect("at least one eligible member");
        let member = member.clone();
        target.get_mut(&member).expect("member in the target").insert(unit.clone());
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(flow: &str, count: u16) -> BTreeSet<Unit> {
        (0..count).map(|shard| Unit { flow: flow.to_string(), shard }).collect()
    }

    fn member(id: &str, owned: &[u16]) -> Candidate {
        Candidate {
            member_id: id.to_string(),
            owned: owned.iter().map(|s| Unit { flow: "f".into(), shard: *s }).collect(),
            compatible: true,
        }
    }

    fn shards(set: &BTreeSet<Unit>) -> Vec<u16> {
        set.iter().map(|u| u.shard).collect()
    }

    #[test]
    fn fresh_members_split_the_shards_evenly() {
        let all = units("f", 8);
        let members = [member("a", &[]), member("b", &[]), member("c", &[])];
        let assignment = assign(&all, &members);
        let sizes: Vec<usize> = assignment.now.values().map(BTreeSet::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 8);
        assert!(sizes.iter().all(|n| *n == 2 || *n == 3), "{sizes:?}");
        assert!(assignment.pending.is_empty());
    }

    #[test]
    fn a_new_member_gets_shards_only_after_their_owner_dropped_them() {
        let all = units("f", 6);
        // One member owned everything; a second joins.
        let first = assign(&all, &[member("a", &[0, 1, 2, 3, 4, 5]), member("b", &[])]);
        assert_eq!(shards(&first.now["a"]), vec![0, 1, 2], "a keeps its share and drops the rest");
        assert!(first.now["b"].is_empty(), "b waits: a still replicates them");
        assert_eq!(shards(&first.pending["b"]), vec![3, 4, 5]);
        // a dropped 3..5 and joined again.
        let second = assign(&all, &[member("a", &[0, 1, 2]), member("b", &[])]);
        assert_eq!(shards(&second.now["a"]), vec![0, 1, 2], "nothing that stays is moved");
        assert_eq!(shards(&second.now["b"]), vec![3, 4, 5]);
        assert!(second.pending.is_empty());
    }

    #[test]
    fn a_dead_members_shards_go_to_the_others_at_once() {
        let all = units("f", 6);
        // c died: its shards 4 and 5 are owned by nobody in the group.
        let assignment = assign(&all, &[member("a", &[0, 1]), member("b", &[2, 3])]);
        assert_eq!(shards(&assignment.now["a"]), vec![0, 1, 4]);
        assert_eq!(shards(&assignment.now["b"]), vec![2, 3, 5]);
        assert!(assignment.pending.is_empty());
    }

    #[test]
    fn a_shard_claimed_twice_is_dropped_by_both_before_anyone_gets_it() {
        let all = units("f", 2);
        // b claims 1 too (it was a zombie, say): the first claim (a's) counts.
        let assignment = assign(&all, &[member("a", &[0, 1]), member("b", &[1])]);
        assert_eq!(shards(&assignment.now["a"]), vec![0], "a keeps its share");
        assert!(assignment.now["b"].is_empty(), "b drops 1 as well");
        assert_eq!(shards(&assignment.pending["b"]), vec![1], "and gets it once a no longer has it");
    }

    #[test]
    fn an_incompatible_member_gets_nothing_and_its_shards_wait_for_it_to_drop_them() {
        let all = units("f", 4);
        let mut odd = member("b", &[2, 3]);
        odd.compatible = false;
        let assignment = assign(&all, &[member("a", &[0, 1]), odd]);
        assert!(assignment.now["b"].is_empty());
        assert_eq!(shards(&assignment.now["a"]), vec![0, 1]);
        assert_eq!(shards(&assignment.pending["a"]), vec![2, 3]);
    }

    #[test]
    fn units_no_longer_configured_are_dropped() {
        let all = units("f", 2);
        let assignment = assign(&all, &[member("a", &[0, 1, 7])]);
        assert_eq!(shards(&assignment.now["a"]), vec![0, 1]);
    }
}
