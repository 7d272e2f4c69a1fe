//! Failover and failback on real Kafka, as an operator runs them: `kferry run`, `kferry
//! failover` and `kferry failback` are subprocesses; what the clusters hold afterwards and
//! where groups continue is read with confluent-kafka (read_committed), never with kferry.

use base64::Engine as _;
use std::collections::BTreeMap;
use std::time::Duration;

use protocol_tests::dr::{first_records, kferry_json, wait_for_content};
use protocol_tests::{
    alias, by_partition, consume, content, create_topic, eventually, group_consume, primary, produce, secondary,
    two_cluster_config, unique_name, Content, Kferry,
};
use serde_json::Value;

/// A config with the flow `<p> -> <s>` over `topic`, syncing `group`, every second.
fn dr_config(source: &str, target: &str, topic: &str, group: &str) -> String {
    two_cluster_config(
        source,
        target,
        &format!(
            "    topics: [\"{topic}\"]\n    groups: [\"{group}\"]\n    refresh_topics_interval_seconds: 1\n    \
             sync_group_offsets_interval_seconds: 1\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_failover_then_reset_failback_returns_the_pair_without_duplicates() {
    let (p, s) = (alias("p"), alias("s"));
    let flow = format!("{p}->{s}");
    let topic = unique_name("dr-planned");
    let group = unique_name("dr-group");
    let config = dr_config(&p, &s, &topic, &group);
    // A config topic sync copies: a failed-over flow must not copy it over the secondary's.
    create_topic(&primary(), &topic, 3, &["retention.ms=604800001"]).await;
    let txn = unique_name("txn");
    produce(&primary(), &topic, 300, "lz4", &["--transactional-id", &txn, "--txn-size", "7", "--abort-every", "3"])
        .await;
    let kferry = Kferry::start("run", &config);
    let consumed_on_primary = by_partition(&group_consume(&primary(), &topic, &group, "20", &[]).await);
    let on_primary = consume(&primary(), &topic, "read_committed", 0).await;
    wait_for_content(&secondary(), &topic, &content(&on_primary), "everything on the secondary").await;

    // Planned failover: producers stopped; nothing left behind; the running flow is fenced.
    let dry_run = kferry_json("failover", &["--flow", &flow, "--planned", "--dry-run", "--json"], &config).await;
    let failover = kferry_json("failover", &["--flow", &flow, "--planned", "--json"], &config).await;
    for point in failover["partitions"].as_array().unwrap() {
        assert_eq!(point["source_end"], point["replicated_to"], "{point}");
    }
    assert_eq!(dry_run["partitions"], failover["partitions"], "the dry run shows the failover point it then records");
    // The running kferry stops by itself, idle as it is, within seconds.
    let (code, _, stderr) = kferry.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("failed over") || stderr.contains("another kferry instance took over"), "{stderr}");
    // Restarted, it does no topic-sync round: the secondary's own config stays.
    let alter = ["alter-config", "--bootstrap", &secondary(), "--topic", &topic, "--set", "retention.ms=86400000"];
    protocol_tests::verify_json(&alter).await;
    let (code, _, stderr) = Kferry::run_to_end("run", &config).await;
    assert_eq!(code, Some(1), "a failed-over flow must not run again:\n{stderr}");
    assert!(stderr.contains("failed over"), "{stderr}");
    let configs = protocol_tests::describe_topic(&secondary(), &topic).await.configs;
    assert_eq!(configs.get("retention.ms").map(String::as_str), Some("86400000"), "{configs:?}");
    let (code, _, stderr) = Kferry::run_to_end_with("failover", &["--flow", &flow, "--force"], &config).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("flow {flow}: already failed over (planned)")), "{stderr}");

    // The group resumes on the secondary at exactly the next record.
    let source = by_partition(&on_primary);
    let first = first_records(&secondary(), &topic, &group).await;
    for (partition, record) in &first {
        let next = &source[partition][consumed_on_primary[partition].len()];
        assert!(record.same_as(next), "partition {partition}: got {record:?}, expected {next:?}");
    }
    let groups = failover["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3, "{groups:?}");

    // Producers write to the secondary; the group moves on there.
    produce(&secondary(), &topic, 90, "zstd", &["--base-timestamp", "1600000000000"]).await;
    let moved_on_secondary = by_partition(&group_consume(&secondary(), &topic, &group, "30", &[]).await);
    let on_secondary = consume(&secondary(), &topic, "read_committed", 0).await;

    // Failback, reset mode: the primary's copy is deleted and everything comes back once.
    let plan = kferry_json("failback", &["--flow", &flow, "--mode", "reset", "--dry-run", "--json"], &config).await;
    let runner = Kferry::start_with("failback", &["--flow", &flow, "--mode", "reset", "--json"], &config);
    // The failback process dies once the reverse flow has started; run again, it resumes
    // the reverse flow without deleting or copying anything a second time.
    eventually("the reverse flow copying", Duration::from_secs(60), || async {
        (!consume(&primary(), &topic, "read_committed", 0).await.is_empty()).then_some(())
    })
    .await;
    let (_, first_stdout, _) = tokio::time::timeout(Duration::from_secs(30), async {
        let pid = runner.pid().unwrap().to_string();
        let _ = std::process::Command::new("kill").args(["-KILL", &pid]).status();
        runner.stop().await
    })
    .await
    .expect("the first failback process ends");
    let runner = Kferry::start_with("failback", &["--flow", &flow, "--mode", "reset", "--json"], &config);
    wait_for_content(&primary(), &topic, &content(&on_secondary), "the secondary's records back on the primary").await;
    let complete = kferry_json("failback", &["--flow", &flow, "--complete", "--json"], &config).await;
    // The failback process exits by itself once `--complete` has fenced it.
    let (code, _, stderr) = runner.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("in progress (failback reset): resuming the reverse flow"), "{stderr}");
    assert!(stderr.contains("fenced by `failback --complete`"), "{stderr}");
    let acted: Value = serde_json::Deserializer::from_str(&first_stdout).into_iter().next().unwrap().unwrap();
    assert_eq!(acted["partitions"], plan["partitions"], "the dry run lists what the real run then does");
    assert_eq!(acted["groups"], plan["groups"]);
    for partition in complete["lag"].as_array().unwrap() {
        assert_eq!(partition[2], 0, "{partition}");
    }

    // The primary holds every record exactly once in its live range, and the group
    // continues there at the next record.
    let back_on_primary = consume(&primary(), &topic, "read_committed", 0).await;
    assert_eq!(content(&back_on_primary), content(&on_secondary));
    let secondary_records = by_partition(&on_secondary);
    let first = first_records(&primary(), &topic, &group).await;
    for (partition, record) in &first {
        let read = consumed_on_primary[partition].len() + moved_on_secondary[partition].len();
        let next = &secondary_records[partition][read];
        assert!(record.same_as(next), "partition {partition}: got {record:?}, expected {next:?}");
    }

    // The forward flow runs again from the right place: new records reach the secondary
    // once, nothing already there comes back a second time.
    let kferry = Kferry::start("run", &config);
    produce(&primary(), &topic, 60, "gzip", &["--base-timestamp", "1700000000000"]).await;
    let everything = consume(&primary(), &topic, "read_committed", 0).await;
    wait_for_content(&secondary(), &topic, &content(&everything), "the forward flow copying new records").await;
    let (took, code, _, stderr) = kferry.stop_timed().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
}

/// Port of the source cluster the disaster test starts and kills (its controller uses the
/// next one): `KFERRY_TEST_OWN_PORT`, by default 19692, outside every range scripts/test and
/// the benchmarks use. Set it where several suites share a machine.
fn disaster_source_port() -> u16 {
    std::env::var("KFERRY_TEST_OWN_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(19692)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disaster_failover_then_incremental_failback_keeps_every_record_once() {
    let source = protocol_tests::OwnCluster::start("drsource", disaster_source_port()).await;
    let (p, s) = (alias("p"), alias("s"));
    let flow = format!("{p}->{s}");
    let topic = unique_name("dr-disaster");
    let groups = unique_name("dr-groups");
    let (moved, drained) = (format!("{groups}-moved"), format!("{groups}-drained"));
    let config = format!(
        "clusters:\n  {p}: {{ bootstrap_servers: [\"{}\"] }}\n  {s}: {{ bootstrap_servers: [\"{}\"] }}\n\
         flows:\n  - source: {p}\n    target: {s}\n    topics: [\"{topic}\"]\n    groups: [\"{groups}.*\"]\n    \
         refresh_topics_interval_seconds: 1\n    sync_group_offsets_interval_seconds: 1\n    buffer_bytes: 1048576\n",
        source.bootstrap,
        secondary()
    );
    create_topic(&source.bootstrap, &topic, 2, &[]).await;
    produce(&source.bootstrap, &topic, 2_000, "lz4", &[]).await;
    let kferry = Kferry::start("run", &config);
    let before = consume(&source.bootstrap, &topic, "read_committed", 0).await;
    wait_for_content(&secondary(), &topic, &content(&before), "the first records on the secondary").await;
    group_consume(&source.bootstrap, &topic, &moved, "100", &[]).await;
    eventually("the group's offsets on the secondary", Duration::from_secs(30), || async {
        let offsets = protocol_tests::describe_group(&secondary(), &moved).await.offsets;
        (offsets.len() == 2).then_some(())
    })
    .await;

    // The disaster: the source broker dies in the middle of replicating a backlog. kferry
    // (restarted with a backlog waiting and a small buffer, so it takes many cycles) has
    // seen the source's end but not copied everything when the broker is killed.
    eprintln!("disaster test: kill, backlog");
    kferry.kill().await;
    produce(&source.bootstrap, &topic, 200_000, "lz4", &["--base-timestamp", "1500000000000"]).await;
    let kferry = Kferry::start("run", &config);
    let target = protocol_tests::connect("secondary", &secondary()).await;
    let progress_group = format!("kferry.progress.{p}.{s}");
    eventually("kferry behind a source end it has seen", Duration::from_secs(60), || async {
        let progress = kferry::replicate::state::read_progress(&target, &progress_group).await.ok()?;
        progress.iter().any(|p| p.source_end.is_some_and(|end| end > p.next_offset + 1_000)).then_some(())
    })
    .await;
    eprintln!("disaster test: source killed");
    source.kill().await;
    let failover = kferry_json("failover", &["--flow", &flow, "--force", "--json"], &config).await;
    kferry.kill().await;
    assert_eq!(failover["source_reachable"], false);
    let on_secondary = by_partition(&consume(&secondary(), &topic, "read_committed", 0).await);
    let mut points = BTreeMap::new();
    for point in failover["partitions"].as_array().unwrap() {
        let partition = point["partition"].as_i64().unwrap() as i32;
        let (replicated_to, source_end) =
            (point["replicated_to"].as_i64().unwrap(), point["source_end"].as_i64().unwrap());
        assert!(source_end >= replicated_to, "{point}");
        assert_eq!(point["not_replicated"].as_i64(), Some(source_end - replicated_to), "{point}");
        // Nothing is compacted or transactional here: source offsets count records.
        assert_eq!(
            on_secondary[&partition].len() as i64,
            replicated_to,
            "{point}: the secondary holds what was replicated"
        );
        points.insert(partition, (replicated_to, source_end));
    }
    let at_risk: i64 = points.values().map(|(to, end)| end - to).sum();
    assert!(at_risk > 1_000, "the failover reports the source offsets it knows were not replicated: {failover}");

    // Life goes on on the secondary: producers write there, groups read there.
    produce(&secondary(), &topic, 100, "zstd", &["--base-timestamp", "1600000000000"]).await;
    group_consume(&secondary(), &topic, &moved, "10", &[]).await;
    let pre_failover: Vec<String> = on_secondary.iter().map(|(p, r)| format!("{p}={}", r.len())).collect();
    group_consume(&secondary(), &topic, &drained, &pre_failover.join(","), &[]).await;
    let after_failover = by_partition(&consume(&secondary(), &topic, "read_committed", 0).await);

    // The old primary comes back with records the secondary never got (the divergent tail).
    eprintln!("disaster test: source restarted");
    source.restart().await;
    let old_primary = by_partition(&consume(&source.bootstrap, &topic, "read_committed", 0).await);
    for (partition, (replicated_to, source_end)) in &points {
        let old = &old_primary[partition];
        assert!(old.len() as i64 >= *source_end, "partition {partition}: the last seen end is not beyond the log");
        let replicated: Vec<_> = old[..*replicated_to as usize].to_vec();
        assert_eq!(content(&replicated), content(&on_secondary[partition]), "partition {partition}");
    }

    let dir = std::env::temp_dir().join(unique_name("dr-export"));
    std::fs::create_dir_all(&dir).unwrap();
    let export = ["--export-dir", dir.to_str().unwrap()];
    let mut args = vec!["--flow", flow.as_str(), "--mode", "incremental", "--json"];
    args.extend(export);
    let plan = kferry_json("failback", &[args.clone(), vec!["--dry-run"]].concat(), &config).await;
    eprintln!("disaster test: failback started");
    let runner = Kferry::start_with("failback", &args, &config);
    // The primary gets the records written on the secondary after the failover point,
    // after everything it already had.
    let mut expected = Content::new();
    for (partition, old) in &old_primary {
        let written_on_secondary = &after_failover[partition][on_secondary[partition].len()..];
        expected.insert(*partition, content(old).remove(partition).unwrap());
        expected
            .get_mut(partition)
            .unwrap()
            .extend(content(written_on_secondary).remove(partition).unwrap_or_default());
    }
    wait_for_content(&source.bootstrap, &topic, &expected, "the secondary's new records on the primary").await;
    eprintln!("disaster test: complete");
    kferry_json("failback", &["--flow", &flow, "--complete", "--json"], &config).await;
    let (code, stdout, stderr) =
        tokio::time::timeout(Duration::from_secs(60), runner.stop()).await.expect("runner ends");
    assert_eq!(code, Some(0), "{stderr}");
    let acted: Value = serde_json::Deserializer::from_str(&stdout).into_iter().next().unwrap().unwrap();
    assert_eq!(acted["partitions"], plan["partitions"], "the dry run lists what the real run then does");

    eprintln!("disaster test: runner ended");
    // The divergent tail went to the export file, record for record.
    let export_path = acted["export"].as_str().expect("an export file");
    // Record data: readable by its owner only.
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(export_path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{export_path}");
    let exported: Vec<Value> =
        std::fs::read_to_string(export_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let divergent: usize = points.iter().map(|(p, (to, _))| old_primary[p].len() - *to as usize).sum();
    assert_eq!(exported.len(), divergent);
    for line in &exported {
        let (partition, offset) = (line["partition"].as_i64().unwrap() as i32, line["offset"].as_i64().unwrap());
        let record = old_primary[&partition].iter().find(|r| r.offset == offset).expect("exported record exists");
        let b64 = |v: &Value| v.as_str().map(|t| base64::engine::general_purpose::STANDARD.decode(t).unwrap());
        let (key, value) = (b64(&line["key"]), b64(&line["value"]));
        assert_eq!(
            (key, value, line["timestamp"].as_i64().unwrap()),
            (record.key.clone(), record.value.clone(), record.timestamp)
        );
    }

    // Groups that moved continue on the primary at the next record, never in the tail.
    let primary_now = by_partition(&consume(&source.bootstrap, &topic, "read_committed", 0).await);
    let first = first_records(&source.bootstrap, &topic, &moved).await;
    for (partition, record) in &first {
        assert!(record.same_as(&after_failover[partition][110]), "{moved} partition {partition}: {record:?}");
    }
    let first = first_records(&source.bootstrap, &topic, &drained).await;
    for (partition, record) in &first {
        let first_written_on_secondary = &after_failover[partition][on_secondary[partition].len()];
        assert!(record.same_as(first_written_on_secondary), "{drained} partition {partition}: {record:?}");
        assert!(record.offset >= old_primary[partition].last().unwrap().offset, "never in the divergent tail");
    }
    assert_eq!(content(&primary_now.values().flatten().cloned().collect::<Vec<_>>()), expected);

    eprintln!("disaster test: forward flow again");
    // The forward flow runs again: new records only, the tail never reaches the secondary.
    let kferry = Kferry::start("run", &config);
    produce(&source.bootstrap, &topic, 40, "gzip", &["--base-timestamp", "1700000000000"]).await;
    let mut expected_secondary = content(&after_failover.values().flatten().cloned().collect::<Vec<_>>());
    let all_now = by_partition(&consume(&source.bootstrap, &topic, "read_committed", 0).await);
    for (partition, records) in &all_now {
        let new = &records[primary_now[partition].len()..];
        expected_secondary.get_mut(partition).unwrap().extend(content(new).remove(partition).unwrap_or_default());
    }
    wait_for_content(&secondary(), &topic, &expected_secondary, "the forward flow copying only new records").await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_problem() {
    let (p, s) = (alias("p"), alias("s"));
    let flow = format!("{p}->{s}");
    let topic = unique_name("dr-refusals");
    let with_target = |target: &str, keys: &str| {
        format!(
            "clusters:\n  {p}: {{ bootstrap_servers: [\"{}\"] }}\n  {s}: {{ bootstrap_servers: [\"{target}\"] }}\n\
             flows:\n  - source: {p}\n    target: {s}\n    topics: [\"{topic}\"]\n{keys}",
            primary()
        )
    };
    let config = with_target(&secondary(), "");
    let cases = [
        (
            "failover",
            vec!["--flow", flow.as_str(), "--planned"],
            with_target("127.0.0.1:1", ""),
            1,
            format!("failover refused: the flow's target cluster {s} is unreachable"),
        ),
        ("failover", vec!["--flow", flow.as_str(), "--force"], config.clone(), 1, "nothing replicated yet".into()),
        ("failover", vec!["--flow", "nowhere->else", "--force"], config.clone(), 2, "no such flow".into()),
        (
            "failback",
            vec!["--flow", flow.as_str(), "--mode", "reset"],
            config.clone(),
            1,
            format!("flow {flow}: failback refused: the flow is not failed over"),
        ),
        (
            "failback",
            vec!["--flow", flow.as_str(), "--mode", "incremental"],
            with_target(&secondary(), "    policy: prefix\n"),
            1,
            "this flow uses the prefix policy".into(),
        ),
        (
            "failback",
            vec!["--flow", flow.as_str(), "--complete"],
            config.clone(),
            1,
            format!("no failback in progress (the reverse flow {s}->{p} has no active record on {p})"),
        ),
    ];
    for (command, args, config, expected_code, message) in cases {
        let (code, stdout, stderr) = Kferry::run_to_end_with(command, &args, &config).await;
        assert_eq!(code, Some(expected_code), "kferry {command} {args:?}:\n{stderr}\n{stdout}");
        assert!(stderr.contains(&message), "kferry {command} {args:?} must say \"{message}\":\n{stderr}");
    }
}

/// The records of `topics` on `bootstrap`, by topic.
async fn contents(bootstrap: &str, topics: &[String]) -> BTreeMap<String, Content> {
    let mut all = BTreeMap::new();
    for topic in topics {
        all.insert(topic.clone(), content(&consume(bootstrap, topic, "read_committed", 0).await));
    }
    all
}

async fn wait_for_all(bootstrap: &str, expected: &BTreeMap<String, Content>, what: &str) {
    for (topic, content) in expected {
        wait_for_content(bootstrap, topic, content, &format!("{what}: {topic}")).await;
    }
}

/// The seed's topics in one flow, twice round the whole cycle (planned failover, reset
/// failback, complete): a compact-only topic (as `_schemas`, `connect-configs`) is deleted and
/// recreated by reset, once confirmed; a user topic ending in `.internal` is replicated;
/// every record is once on both sides; the group continues at the next record each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_full_cycles_with_compact_only_and_internal_topics_keep_every_record_once() {
    let (p, s) = (alias("p"), alias("s"));
    let flow = format!("{p}->{s}");
    let base = unique_name("dr-twice");
    let (data, schemas, internal) = (format!("{base}-data"), format!("{base}_schemas"), format!("{base}.internal"));
    let topics = [data.clone(), schemas.clone(), internal.clone()];
    let group = unique_name("dr-twice-group");
    let config = dr_config(&p, &s, &format!("{base}.*"), &group);
    create_topic(&primary(), &data, 2, &[]).await;
    create_topic(&primary(), &schemas, 1, &["cleanup.policy=compact", "min.compaction.lag.ms=3600000"]).await;
    create_topic(&primary(), &internal, 2, &[]).await;
    produce(&primary(), &data, 100, "lz4", &[]).await;
    produce(&primary(), &schemas, 30, "none", &["--key-space", "10"]).await;
    produce(&primary(), &internal, 50, "zstd", &[]).await;
    let mut kferry = Kferry::start("run", &config);
    // Records of `data` the group has read, per partition, counted from the log start:
    // replication and reset failback keep the order, so it is the next record's index.
    let mut consumed: BTreeMap<i32, usize> = BTreeMap::new();
    for cycle in 1..=2 {
        let on_primary = contents(&primary(), &topics).await;
        wait_for_all(&secondary(), &on_primary, &format!("cycle {cycle}: the secondary")).await;
        for (partition, read) in by_partition(&group_consume(&primary(), &data, &group, "10", &[]).await) {
            *consumed.entry(partition).or_default() += read.len();
        }
        kferry_json("failover", &["--flow", &flow, "--planned", "--json"], &config).await;
        let (code, _, stderr) = kferry.wait_exit(Duration::from_secs(15)).await;
        assert_eq!(code, Some(1), "cycle {cycle}: the forward kferry stops by itself:\n{stderr}");
        let live = by_partition(&consume(&secondary(), &data, "read_committed", 0).await);
        for (partition, record) in first_records(&secondary(), &data, &group).await {
            let next = &live[&partition][consumed[&partition]];
            assert!(record.same_as(next), "cycle {cycle}, secondary partition {partition}: {record:?}, not {next:?}");
        }

        produce(&secondary(), &data, 40, "gzip", &["--base-timestamp", &format!("{}", 1_600_000_000_000i64 + cycle)])
            .await;
        produce(&secondary(), &schemas, 10, "none", &["--key-space", "10"]).await;
        produce(&secondary(), &internal, 20, "none", &[]).await;
        for (partition, read) in by_partition(&group_consume(&secondary(), &data, &group, "5", &[]).await) {
            *consumed.entry(partition).or_default() += read.len();
        }
        let on_secondary = contents(&secondary(), &topics).await;

        // Reset plans to recreate the compact-only topic; unconfirmed, it changes nothing.
        let args = ["--flow", flow.as_str(), "--mode", "reset", "--json"];
        let plan = kferry_json("failback", &[&args[..], &["--dry-run"]].concat(), &config).await;
        let recreate = plan["recreate"].as_array().unwrap();
        assert_eq!(recreate.len(), 1, "{plan}");
        assert_eq!(recreate[0]["topic"], schemas.as_str());
        assert_eq!(recreate[0]["partitions"], 1);
        assert_eq!(recreate[0]["configs"]["cleanup.policy"], "compact", "{plan}");
        let (code, _, stderr) = Kferry::run_to_end_with("failback", &args, &config).await;
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("Rerun with --yes to confirm"), "{stderr}");
        let before = contents(&primary(), &topics).await;
        assert_eq!(before[&schemas], on_primary[&schemas], "cycle {cycle}: nothing deleted unconfirmed");

        let runner = Kferry::start_with("failback", &[&args[..], &["--yes"]].concat(), &config);
        wait_for_all(&primary(), &on_secondary, &format!("cycle {cycle}: the primary")).await;
        let complete = kferry_json("failback", &["--flow", &flow, "--complete", "--json"], &config).await;
        let (code, stdout, stderr) = runner.wait_exit(Duration::from_secs(15)).await;
        assert_eq!(code, Some(0), "cycle {cycle}: the failback process exits by itself:\n{stderr}");
        assert!(stderr.contains("fenced by `failback --complete`"), "{stderr}");
        let acted: Value = serde_json::Deserializer::from_str(&stdout).into_iter().next().unwrap().unwrap();
        assert_eq!(acted["partitions"], plan["partitions"]);
        for partition in complete["lag"].as_array().unwrap() {
            assert_eq!(partition[2], 0, "{partition}");
        }
        let recreated = protocol_tests::describe_topic(&primary(), &schemas).await;
        assert_eq!(recreated.partitions, 1);
        assert_eq!(recreated.configs.get("cleanup.policy").map(String::as_str), Some("compact"));
        assert_eq!(recreated.configs.get("min.compaction.lag.ms").map(String::as_str), Some("3600000"));
        assert_eq!(contents(&primary(), &topics).await, on_secondary, "cycle {cycle}: every record once");
        let live = by_partition(&consume(&primary(), &data, "read_committed", 0).await);
        for (partition, record) in first_records(&primary(), &data, &group).await {
            let next = &live[&partition][consumed[&partition]];
            assert!(record.same_as(next), "cycle {cycle}, primary partition {partition}: {record:?}, not {next:?}");
        }

        // Back to where it started: the forward flow copies new records only.
        kferry = Kferry::start("run", &config);
        produce(&primary(), &data, 30, "snappy", &["--base-timestamp", &format!("{}", 1_700_000_000_000i64 + cycle)])
            .await;
    }
    let on_primary = contents(&primary(), &topics).await;
    wait_for_all(&secondary(), &on_primary, "after two cycles: the secondary").await;
    let (took, code, _, stderr) = kferry.stop_timed().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
}

/// A producer that keeps writing to `topic` (20 records at a time, confluent-kafka) until
/// stopped: the application that is still running when an operator forces a failover.
struct Writer {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<u32>,
}

impl Writer {
    fn start(bootstrap: &str, topic: &str) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
        let task = tokio::spawn(async move {
            let mut rounds = 0;
            // Bounded: 600 rounds are minutes of writing, far beyond any test's need.
            while !*stopped.borrow_and_update() && rounds < 600 {
                produce(&bootstrap, &topic, 20, "lz4", &["--linger-ms", "5"]).await;
                rounds += 1;
            }
            rounds
        });
        Self { stop, task }
    }

    /// Stops after the write in progress; returns how many rounds of 20 were written.
    async fn stop(self) -> u32 {
        self.stop.send_replace(true);
        self.task.await.expect("writer task")
    }
}

/// The target's end offsets (high watermark: committed, aborted and markers alike) of
/// `topics`, read with confluent-kafka.
async fn ends(bootstrap: &str, topics: &[&str]) -> BTreeMap<(String, i32), i64> {
    let mut all = BTreeMap::new();
    for topic in topics {
        for (partition, end) in protocol_tests::mm2::end_offsets(bootstrap, topic).await {
            all.insert((topic.to_string(), partition), end);
        }
    }
    all
}

/// The target end the failover recorded, per partition of its JSON output.
fn recorded_target_ends(failover: &Value, topic: &str) -> BTreeMap<(String, i32), i64> {
    failover["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ((topic.to_string(), p["partition"].as_i64().unwrap() as i32), p["target_end"].as_i64().unwrap()))
        .collect()
}

/// A forced failover while the primary is up and its producer keeps writing (the operator
/// cannot wait, or cannot reach the applications): the recorded target end is the target's
/// end right after the command (nothing lands after the point is read), and incremental
/// failback copies nothing twice, compared record by record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_failover_while_a_producer_writes_fails_back_without_duplicates() {
    let (p, s) = (alias("p"), alias("s"));
    let flow = format!("{p}->{s}");
    let topic = unique_name("dr-forced-writing");
    let group = unique_name("dr-forced-group");
    let config = dr_config(&p, &s, &topic, &group);
    create_topic(&primary(), &topic, 3, &[]).await;
    produce(&primary(), &topic, 300, "lz4", &[]).await;
    let kferry = Kferry::start("run", &config);
    let first = consume(&primary(), &topic, "read_committed", 0).await;
    wait_for_content(&secondary(), &topic, &content(&first), "the first records on the secondary").await;
    let writer = Writer::start(&primary(), &topic);
    // Let kferry copy some of what the writer writes, mid-stream.
    eventually("kferry copying the writer's records", Duration::from_secs(60), || async {
        let copied = consume(&secondary(), &topic, "read_committed", 0).await.len();
        (copied >= first.len() + 100).then_some(())
    })
    .await;

    let failover = kferry_json("failover", &["--flow", &flow, "--force", "--json"], &config).await;
    let right_after = ends(&secondary(), &[&topic]).await;
    assert_eq!(right_after, recorded_target_ends(&failover, &topic), "the recorded target end: {failover}");
    let (code, _, stderr) = kferry.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(code, Some(1), "the fenced kferry stops by itself:\n{stderr}");
    assert_eq!(ends(&secondary(), &[&topic]).await, right_after, "nothing landed after the failover returned");

    // The primary's writer goes on a little (the divergent tail), then moves to the secondary.
    tokio::time::sleep(Duration::from_secs(2)).await;
    writer.stop().await;
    let on_secondary = by_partition(&consume(&secondary(), &topic, "read_committed", 0).await);
    let old_primary = by_partition(&consume(&primary(), &topic, "read_committed", 0).await);
    let mut divergent = 0;
    for point in failover["partitions"].as_array().unwrap() {
        let partition = point["partition"].as_i64().unwrap() as i32;
        let replicated_to = point["replicated_to"].as_i64().unwrap() as usize;
        assert_eq!(content(&on_secondary[&partition]), content(&old_primary[&partition][..replicated_to]), "{point}");
        divergent += old_primary[&partition].len() - replicated_to;
    }
    assert!(divergent > 0, "the writer wrote past the failover point");
    produce(&secondary(), &topic, 60, "zstd", &[]).await;
    let after_failover = by_partition(&consume(&secondary(), &topic, "read_committed", 0).await);

    // Incremental failback: the primary keeps all it had (its tail exported) and gets the
    // secondary's new records once, after it.
    let dir = std::env::temp_dir().join(unique_name("dr-forced-export"));
    std::fs::create_dir_all(&dir).unwrap();
    let args = ["--flow", flow.as_str(), "--mode", "incremental", "--json", "--export-dir", dir.to_str().unwrap()];
    let runner = Kferry::start_with("failback", &args, &config);
    let mut expected = Content::new();
    for (partition, old) in &old_primary {
        let new_on_secondary = &after_failover[partition][on_secondary[partition].len()..];
        let mut records = content(old).remove(partition).unwrap();
        records.extend(content(new_on_secondary).remove(partition).unwrap_or_default());
        expected.insert(*partition, records);
    }
    wait_for_content(&primary(), &topic, &expected, "the secondary's new records on the primary, once").await;
    kferry_json("failback", &["--flow", &flow, "--complete", "--json"], &config).await;
    let (code, stdout, stderr) = runner.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{stderr}");
    let acted: Value = serde_json::Deserializer::from_str(&stdout).into_iter().next().unwrap().unwrap();
    let exported = std::fs::read_to_string(acted["export"].as_str().expect("an export file")).unwrap();
    assert_eq!(exported.lines().count(), divergent, "the export holds exactly the divergent tail");
    assert_eq!(content(&consume(&primary(), &topic, "read_committed", 0).await), expected);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A kferry whose every round fails (its state topic refuses the state batch, so each round
/// is abandoned and retried with a new producer epoch: the kferry most likely to take its
/// transactional id back after a fence) while `failover --force` runs, three times over
/// (a flow and topic of its own each time): once the command has returned, nothing more
/// lands on the target, neither data nor state, and the process stops by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_force_in_a_loop_stops_a_kferry_whose_rounds_keep_failing() {
    for attempt in 1..=3 {
        let (p, s) = (alias("p"), alias("s"));
        let flow = format!("{p}->{s}");
        let topic = unique_name("dr-force-loop");
        let config = dr_config(&p, &s, &topic, "none");
        let state_topic = format!("__kferry.offset-map.{p}");
        create_topic(&primary(), &topic, 2, &[]).await;
        produce(&primary(), &topic, 50, "none", &[]).await;
        let kferry = Kferry::start("run", &config);
        let first = consume(&primary(), &topic, "read_committed", 0).await;
        wait_for_content(&secondary(), &topic, &content(&first), &format!("attempt {attempt}: first copy")).await;
        // From now on every round's state batch is refused: a state record is larger than 120
        // bytes, a transaction marker (about 80) is not, so the aborts still complete.
        let alter =
            ["alter-config", "--bootstrap", &secondary(), "--topic", &state_topic, "--set", "max.message.bytes=120"];
        protocol_tests::verify_json(&alter).await;
        let writer = Writer::start(&primary(), &topic);
        let before = ends(&secondary(), &[&topic]).await;
        eventually(&format!("attempt {attempt}: rounds failing"), Duration::from_secs(60), || async {
            // Data lands in transactions that are then aborted: the end moves, the
            // committed records do not.
            let moved = ends(&secondary(), &[&topic]).await.iter().any(|(k, end)| *end > before[k] + 2);
            moved.then_some(())
        })
        .await;

        let failover = kferry_json("failover", &["--flow", &flow, "--force", "--json"], &config).await;
        let right_after = ends(&secondary(), &[&topic, &state_topic]).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let (code, _, stderr) = kferry.wait_exit(Duration::from_secs(15)).await;
        assert_eq!(code, Some(1), "attempt {attempt}: the failing kferry stops by itself:\n{stderr}");
        assert!(stderr.contains("transaction round abandoned"), "attempt {attempt}: rounds did fail:\n{stderr}");
        assert_eq!(
            ends(&secondary(), &[&topic, &state_topic]).await,
            right_after,
            "attempt {attempt}: kferry produced after `failover --force` returned ({failover})"
        );
        // The failed rounds' data was never committed (the fence aborted the last one).
        let visible = consume(&secondary(), &topic, "read_committed", 0).await.len();
        assert_eq!(visible, first.len(), "attempt {attempt}");
        writer.stop().await;
    }
}
