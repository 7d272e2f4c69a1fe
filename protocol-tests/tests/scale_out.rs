//! Several `kferry run` processes sharing one flow through a group on the target (the
//! config's `group`), against the real test clusters: the shards are spread over the
//! processes (`kferry status` shows who owns what, read from the group coordinator), a
//! process killed with SIGKILL, stopped with SIGTERM, or frozen with SIGSTOP past its session
//! timeout has its shards taken over, and the records confluent-kafka reads back on the
//! target are every committed source record exactly once and in order throughout. A
//! failover with several processes running fences them all.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use protocol_tests::{
    alias, consume, content, create_topic, eventually, primary, produce, two_cluster_config, unique_name,
    wait_until_replicated, Kferry,
};
use serde_json::Value;

const SHARDS: usize = 6;
const SESSION_TIMEOUT_MS: u64 = 6_000;

/// A flow of `SHARDS` shards over `topic`, shared by every process started with it.
fn group_config(source: &str, target: &str, topic: &str, group: &str, instance_id: Option<&str>) -> String {
    let instance = instance_id.map(|id| format!("  instance_id: {id}\n")).unwrap_or_default();
    format!(
        "{}group:\n  id: {group}\n  cluster: {target}\n  session_timeout_ms: {SESSION_TIMEOUT_MS}\n{instance}",
        two_cluster_config(
            source,
            target,
            &format!(
                "    topics: [\"{topic}\"]\n    shards: {SHARDS}\n    sync_group_offsets: false\n    \
                 refresh_topics_interval_seconds: 1\n"
            ),
        )
    )
}

/// `kferry status --json`'s group section: each member's name and how many shards it owns,
/// and how many shards nobody owns.
async fn ownership(config: &str) -> Option<(BTreeMap<String, usize>, usize, Value)> {
    let (_, stdout, _) = Kferry::run_to_end_with("status", &["--json"], config).await;
    let status: Value = serde_json::from_str(&stdout).ok()?;
    let group = status.get("group")?.clone();
    let members = group["members"]
        .as_array()?
        .iter()
        .map(|m| (m["name"].as_str().unwrap_or_default().to_string(), m["shards"].as_array().map_or(0, Vec::len)))
        .collect();
    let unowned = group["unowned"].as_array().map_or(0, Vec::len);
    Some((members, unowned, status))
}

/// Waits until `count` members own every shard between them, evenly, with none unowned;
/// returns how long it took and the status.
async fn balanced_over(config: &str, count: usize, timeout: Duration) -> (Duration, Value) {
    let started = Instant::now();
    let status = eventually(&format!("{SHARDS} shards balanced over {count} processes"), timeout, || async {
        let (members, unowned, status) = ownership(config).await?;
        let owned: Vec<usize> = members.values().copied().filter(|n| *n > 0).collect();
        let even = owned.len() == count
            && unowned == 0
            && owned.iter().sum::<usize>() == SHARDS
            && owned.iter().all(|n| n.abs_diff(SHARDS / count) <= 1);
        (members.len() == count && even).then_some(status)
    })
    .await;
    (started.elapsed(), status)
}

/// Every committed record of `topic` on the source is on the target exactly once, in order.
async fn assert_exactly_once(topic: &str, what: &str) {
    let source = consume(&primary(), topic, "read_committed", 0).await;
    let target = wait_until_replicated(topic, source.len()).await;
    assert_eq!(content(&target), content(&source), "{topic}: {what}");
}

fn signal(kferry: &Kferry, name: &str) {
    let pid = kferry.pid().expect("running").to_string();
    let status = std::process::Command::new("kill").args([&format!("-{name}"), &pid]).status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{name} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_the_shards_and_take_over_a_killed_ones_while_producers_write() {
    let topic = unique_name("scale-kill");
    create_topic(&primary(), &topic, 24, &[]).await;
    let (source, target) = (alias("p"), alias("s"));
    let group = unique_name("kferry-group");
    let config = group_config(&source, &target, &topic, &group, None);
    produce(&primary(), &topic, 4_000, "lz4", &[]).await;

    let processes: Vec<Kferry> = (0..3).map(|_| Kferry::start("run", &config)).collect();
    let (_, status) = balanced_over(&config, 3, Duration::from_secs(90)).await;
    // Each partition is named with the process that replicates it.
    let partitions = status["flows"][0]["partitions"].as_array().cloned().unwrap_or_default();
    assert!(partitions.iter().all(|p| p["owner"].is_string()), "{partitions:?}");

    // Producers write (transactions, some aborted) while one process is killed.
    let txn = unique_name("scale-producer");
    let writing = tokio::spawn({
        let topic = topic.clone();
        async move {
            produce(
                &primary(),
                &topic,
                12_000,
                "zstd",
                &["--transactional-id", &txn, "--txn-size", "20", "--abort-every", "9"],
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut processes = processes.into_iter();
    let victim = processes.next().unwrap();
    victim.kill().await;
    let killed_at = Instant::now();
    let (_, _) = balanced_over(&config, 2, Duration::from_secs(60)).await;
    let taken_over = killed_at.elapsed();
    eprintln!("the killed process's shards were owned again {taken_over:?} after the SIGKILL");
    assert!(
        taken_over < Duration::from_millis(SESSION_TIMEOUT_MS) + Duration::from_secs(20),
        "the others took the killed process's shards only after {taken_over:?}"
    );
    writing.await.expect("the producer ran");
    produce(&primary(), &topic, 2_000, "none", &[]).await;
    assert_exactly_once(&topic, "every committed record once, in order, after a process was killed mid-write").await;
    for process in processes {
        let (code, _, stderr) = process.stop().await;
        assert_eq!(code, Some(0), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_from_one_process_to_three_and_back_loses_and_repeats_nothing() {
    let topic = unique_name("scale-rolling");
    create_topic(&primary(), &topic, 24, &[]).await;
    let (source, target) = (alias("p"), alias("s"));
    let group = unique_name("kferry-group");
    let config = group_config(&source, &target, &topic, &group, None);
    produce(&primary(), &topic, 3_000, "snappy", &[]).await;

    let first = Kferry::start("run", &config);
    balanced_over(&config, 1, Duration::from_secs(60)).await;
    let txn = unique_name("rolling-producer");
    let writing = tokio::spawn({
        let topic = topic.clone();
        async move {
            produce(&primary(), &topic, 20_000, "gzip", &["--transactional-id", &txn, "--abort-every", "11"]).await
        }
    });
    // Up to three, one at a time, each rebalance moving shards while records arrive.
    let second = Kferry::start("run", &config);
    let (to_two, _) = balanced_over(&config, 2, Duration::from_secs(60)).await;
    let third = Kferry::start("run", &config);
    let (to_three, _) = balanced_over(&config, 3, Duration::from_secs(60)).await;
    // And back to one with SIGTERM: each leaves the group, so the next owner starts at once.
    let (stop_first, code, _, stderr) = first.stop_timed().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("left the group"), "{stderr}");
    let (back_to_two, _) = balanced_over(&config, 2, Duration::from_secs(60)).await;
    let (stop_second, code, _, stderr) = second.stop_timed().await;
    assert_eq!(code, Some(0), "{stderr}");
    let (back_to_one, _) = balanced_over(&config, 1, Duration::from_secs(60)).await;
    eprintln!(
        "balanced after: 1->2 {to_two:?}, 2->3 {to_three:?}, 3->2 {back_to_two:?}, 2->1 {back_to_one:?}; \
         SIGTERM exits in {stop_first:?} and {stop_second:?}"
    );
    assert!(stop_first < Duration::from_secs(5) && stop_second < Duration::from_secs(5));
    // A departure that leaves the group is one rebalance, not a session timeout.
    for moved in [back_to_two, back_to_one] {
        assert!(moved < Duration::from_millis(SESSION_TIMEOUT_MS), "shards moved after {moved:?}");
    }
    writing.await.expect("the producer ran");
    assert_exactly_once(&topic, "every committed record once, in order, through 1 -> 3 -> 1 processes").await;
    let (code, _, stderr) = third.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_frozen_past_its_session_timeout_writes_nothing_after_its_shards_moved() {
    let topic = unique_name("scale-zombie");
    create_topic(&primary(), &topic, 12, &[]).await;
    let (source, target) = (alias("p"), alias("s"));
    let group = unique_name("kferry-group");
    let config = group_config(&source, &target, &topic, &group, None);
    produce(&primary(), &topic, 2_000, "lz4", &[]).await;
    let steady = Kferry::start("run", &config);
    let zombie = Kferry::start("run", &config);
    balanced_over(&config, 2, Duration::from_secs(60)).await;
    assert_exactly_once(&topic, "before the freeze").await;

    // Frozen with records in flight: the zombie had fetched some when it stopped.
    let writing = tokio::spawn({
        let topic = topic.clone();
        async move { produce(&primary(), &topic, 6_000, "none", &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    signal(&zombie, "STOP");
    // The group drops it after the session timeout; the other process takes every shard.
    let (moved, _) = balanced_over(&config, 1, Duration::from_secs(60)).await;
    eprintln!("the frozen process's shards moved after {moved:?}");
    writing.await.expect("the producer ran");
    assert_exactly_once(&topic, "while the zombie is frozen").await;

    // Thawed: it must notice it lost its shards before it writes, and rejoin.
    signal(&zombie, "CONT");
    produce(&primary(), &topic, 3_000, "zstd", &[]).await;
    balanced_over(&config, 2, Duration::from_secs(60)).await;
    produce(&primary(), &topic, 1_000, "none", &[]).await;
    assert_exactly_once(&topic, "after the zombie woke: nothing it held when frozen got in twice").await;
    let (code, _, stderr) = zombie.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("stopping every shard of this process")
            || stderr.contains("another member of the group has it now"),
        "the zombie must say it dropped its shards:\n{stderr}"
    );
    let (code, _, stderr) = steady.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_failover_with_two_processes_running_fences_both() {
    let topic = unique_name("scale-failover");
    create_topic(&primary(), &topic, 12, &[]).await;
    let (source, target) = (alias("p"), alias("s"));
    let group = unique_name("kferry-group");
    // Static members, named as a StatefulSet would name its pods.
    let config = group_config(&source, &target, &topic, &group, Some("a"));
    let other = group_config(&source, &target, &topic, &group, Some("b"));
    produce(&primary(), &topic, 3_000, "lz4", &[]).await;
    let processes = [Kferry::start("run", &config), Kferry::start("run", &other)];
    let (_, status) = balanced_over(&config, 2, Duration::from_secs(60)).await;
    let names: Vec<&str> =
        status["group"]["members"].as_array().unwrap().iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(names, ["a", "b"], "static members are named by their instance_id");
    assert_exactly_once(&topic, "before the failover").await;

    let flow = format!("{source}->{target}");
    let (code, stdout, stderr) = Kferry::run_to_end_with("failover", &["--flow", &flow, "--planned"], &config).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for process in processes {
        let (code, _, stderr) = process.wait_exit(Duration::from_secs(20)).await;
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("failed over") || stderr.contains("took over"), "{stderr}");
    }
    assert_exactly_once(&topic, "at the failover point").await;
}
