//! Memory is bounded by the flow's buffer budget, not by the number of partitions: 1,000
//! source partitions holding more data than the budget are replicated while kferry's peak
//! resident set (VmHWM from /proc) stays within the budget plus a fixed baseline.

use std::time::Duration;

use protocol_tests::{
    create_topic, describe_topic, eventually, primary, produce, secondary, unique_flow_config, unique_name, Kferry,
};

const BUDGET: u64 = 4 * 1024 * 1024;
const RECORDS: i64 = 100_000;
/// The process without records in flight: code, runtime, connections, metadata of 1,000
/// partitions. Measured around 15 MiB; generous so the test only fails on real growth.
const BASELINE: u64 = 48 * 1024 * 1024;

/// The sum of the log end offsets of every partition of `topic` on `bootstrap`; `None`
/// while the topic or a partition leader is not there yet (the caller polls: 1,000 new
/// partitions take a while to get leaders on a loaded machine).
async fn records_on(bootstrap: &str, topic: &str) -> Option<i64> {
    let cluster = protocol_tests::connect("count", bootstrap).await;
    let info = cluster.topic(topic).await.ok()?;
    let mut total = 0;
    for &partition in info.partitions.keys() {
        total += cluster
            .list_offset(topic, partition, kferry::client::OffsetSpec::Latest, kferry::client::Isolation::ReadCommitted)
            .await
            .ok()?;
    }
    Some(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_partitions_stay_within_the_buffer_budget() {
    let topic = unique_name("wide");
    create_topic(&primary(), &topic, 1_000, &[]).await;
    // 100 records per partition, ~10 MB in all; a long timeout, 1,000 partitions are slow
    // to fill on a small machine.
    let summary = produce(&primary(), &topic, RECORDS as u32, "none", &["--linger-ms", "50", "--timeout", "240"]).await;
    assert_eq!(summary["delivered"], RECORDS);
    let config = unique_flow_config(&format!(
        "    topics: [\"{topic}\"]\n    delivery: at_least_once\n    buffer_bytes: {BUDGET}\n"
    ));
    let kferry = Kferry::start("run", &config);
    let pid = kferry.pid().expect("kferry runs");
    eventually("target topic", Duration::from_secs(60), || async {
        describe_topic(&secondary(), &topic).await.exists.then_some(())
    })
    .await;
    // Target end offsets also count nothing but records with at_least_once (no markers).
    eventually("every record on the target", Duration::from_secs(180), || async {
        (records_on(&secondary(), &topic).await? >= RECORDS).then_some(())
    })
    .await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("kferry still running");
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM in /proc status");
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    let peak = peak_kib * 1024;
    println!("peak RSS {:.1} MiB with a {} MiB budget and 1,000 partitions", peak as f64 / 1048576.0, BUDGET >> 20);
    assert!(peak <= BUDGET + BASELINE, "peak RSS {peak} bytes exceeds budget {BUDGET} + baseline {BASELINE}");
}
