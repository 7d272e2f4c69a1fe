//! Helpers of the disaster-recovery tests (tests/recovery.rs, tests/connect_drill.rs): run a
//! kferry DR command and read its JSON, wait for a cluster to hold given records, and where a
//! group continues. Everything is read with confluent-kafka, never with kferry.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::{
    by_partition, consume, content, describe_topic, eventually, group_consume, ConsumedRecord, Content, Kferry,
};

/// Waits (up to 120 s) until `topic` on `bootstrap` holds exactly `expected` (read_committed);
/// more records than expected in two reads in a row fail at once: a duplicate never goes
/// away by waiting. (One read may see more: a reset failback deletes the old records while
/// the read is under way, and the read then also gets their copies.)
pub async fn wait_for_content(bootstrap: &str, topic: &str, expected: &Content, what: &str) {
    let total: usize = expected.values().map(Vec::len).sum();
    let too_many = std::sync::atomic::AtomicBool::new(false);
    eventually(what, Duration::from_secs(120), || async {
        if !describe_topic(bootstrap, topic).await.exists {
            return None;
        }
        let records = consume(bootstrap, topic, "read_committed", 0).await;
        let over = records.len() > total;
        let twice = too_many.swap(over, std::sync::atomic::Ordering::Relaxed) && over;
        assert!(!twice, "{what}: {} records, more than the {total} expected, twice in a row", records.len());
        (content(&records) == *expected).then_some(())
    })
    .await;
}

/// Runs a kferry command to its end; it must succeed; returns its stdout as JSON.
pub async fn kferry_json(command: &str, args: &[&str], config: &str) -> Value {
    let (code, stdout, stderr) = Kferry::run_to_end_with(command, args, config).await;
    assert_eq!(code, Some(0), "kferry {command} {args:?} failed:\n{stderr}\n{stdout}");
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("kferry {command} {args:?} printed no JSON ({e}):\n{stdout}"))
}

/// The first record of every partition the group reads on `bootstrap` (not committed).
pub async fn first_records(bootstrap: &str, topic: &str, group: &str) -> BTreeMap<i32, ConsumedRecord> {
    by_partition(&group_consume(bootstrap, topic, group, "1", &["--no-commit", "--timeout", "20"]).await)
        .into_iter()
        .map(|(p, records)| (p, records[0].clone()))
        .collect()
}
