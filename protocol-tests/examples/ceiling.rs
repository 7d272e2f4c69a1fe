//! The hot path's ceiling: kferry's replicator against FAKE brokers in this process.
//!
//! This is the one place a fake broker is right: it measures kferry alone. A fake source
//! answers Fetch from memory (copies of one prepared batch, renumbered; the per-partition and
//! per-request byte limits honoured as Kafka does), a fake target accepts every Produce
//! (counting records and bytes, assigning offsets); both answer the metadata, coordinator,
//! producer-id, offset and transaction requests kferry makes with success. Nothing is
//! stored or checked: what is measured is how fast kferry fetches, selects, stamps and
//! produces with no broker work in the way. kferry runs on its own runtime threads
//! (`kferry-rt`), the fakes on theirs (`fake-rt`); CPU is counted per thread group from
//! /proc/self/task, peak RSS (VmHWM) for the whole process, fakes included. One process per
//! case, so each case has its own peak.
//!
//! ```text
//! cargo run --release -p protocol-tests --example ceiling -- [PARTITIONS,...] [--mib N]
//!     [--batch-records R] [--delivery exactly_once|at_least_once]
//! ```
//!
//! Defaults: 1,64,4096 partitions, 1024 MiB per case, 16 records of 1 KiB per batch (under
//! 16 KiB, Kafka's default producer batch.size), exactly_once. Prints a Markdown table.
//! Ports 30700-30701 on 127.0.0.1.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use kferry::client::{ClientConfig, Cluster};
use kferry::config::{Delivery, FlowConfig};
use kferry::protocol::batch::{BatchItem, BatchIter};
use kferry::protocol::records::build_batch;
use kferry::replicate::engine::Replicator;
use protocol_tests::fake::{api_versions, read_request_body, response, RequestHead};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const TOPIC: &str = "ceiling";
/// Bytes of a record's value; with its key and framing a record takes about 1 KiB.
const VALUE_BYTES: usize = 990;
const SOURCE_PORT: u16 = 30700;
const TARGET_PORT: u16 = 30701;
/// No case may take longer than this.
const CASE_LIMIT: Duration = Duration::from_secs(600);
const MIB: f64 = 1024.0 * 1024.0;

/// The API versions the fakes answer (each from 0): versions whose requests name topics
/// (not topic ids) and use the transaction protocol of Kafka 3.x, which kferry speaks too.
const APIS: [(ApiKey, i16); 15] = [
    (ApiKey::ApiVersions, 3),
    (ApiKey::Metadata, 12),
    (ApiKey::Produce, 9),
    (ApiKey::Fetch, 12),
    (ApiKey::ListOffsets, 7),
    (ApiKey::FindCoordinator, 4),
    (ApiKey::OffsetFetch, 7),
    (ApiKey::OffsetCommit, 8),
    (ApiKey::InitProducerId, 4),
    (ApiKey::CreateTopics, 7),
    (ApiKey::AddPartitionsToTxn, 3),
    (ApiKey::AddOffsetsToTxn, 3),
    (ApiKey::TxnOffsetCommit, 3),
    (ApiKey::EndTxn, 3),
    (ApiKey::DescribeCluster, 1),
];

#[derive(Debug, Clone)]
struct Args {
    partitions: Vec<i32>,
    mib: u64,
    batch_records: usize,
    delivery: Delivery,
}

fn parse_args() -> Result<Args, String> {
    let mut args =
        Args { partitions: vec![1, 64, 4096], mib: 1024, batch_records: 16, delivery: Delivery::ExactlyOnce };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--mib" => args.mib = value("--mib")?.parse().map_err(|e| format!("--mib: {e}"))?,
            "--batch-records" => {
                args.batch_records = value("--batch-records")?.parse().map_err(|e| format!("--batch-records: {e}"))?
            }
            "--delivery" => {
                args.delivery = match value("--delivery")?.as_str() {
                    "exactly_once" => Delivery::ExactlyOnce,
                    "at_least_once" => Delivery::AtLeastOnce,
                    other => return Err(format!("--delivery: {other} is neither exactly_once nor at_least_once")),
                }
            }
            list => {
                args.partitions = list
                    .split(',')
                    .map(|p| p.parse().map_err(|e| format!("partition count {p:?}: {e}")))
                    .collect::<Result<_, _>>()?
            }
        }
    }
    Ok(args)
}

/// The source side: every partition holds `end` records, in copies of `batch`.
struct SourceData {
    batch: Bytes,
    records_per_batch: i64,
    end: i64,
}

/// One fake broker: node 1 on 127.0.0.1:`port`.
struct Fake {
    port: u16,
    source: Option<SourceData>,
    topics: Mutex<BTreeMap<String, (uuid::Uuid, i32)>>,
    next_offsets: Mutex<HashMap<(String, i32), i64>>,
    produced_records: AtomicU64,
    produced_bytes: AtomicU64,
}

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_owned()))
}

impl Fake {
    fn new(port: u16, source: Option<SourceData>, partitions: i32) -> Arc<Self> {
        let topics = BTreeMap::from([(TOPIC.to_owned(), (uuid::Uuid::from_u128(1), partitions))]);
        Arc::new(Self {
            port,
            source,
            topics: Mutex::new(topics),
            next_offsets: Mutex::new(HashMap::new()),
            produced_records: AtomicU64::new(0),
            produced_bytes: AtomicU64::new(0),
        })
    }

    async fn serve(self: Arc<Self>, listener: TcpListener) {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(self.clone().connection(socket));
        }
    }

    /// One request at a time per connection, as a Kafka broker works.
    async fn connection(self: Arc<Self>, mut socket: TcpStream) {
        while let Some((head, body)) = read_request_body(&mut socket).await {
            let Some(frame) = self.answer(&head, body) else {
                eprintln!(
                    "ceiling: fake broker {} cannot answer {:?} v{}; connection closed",
                    self.port, head.api, head.version
                );
                return;
            };
            if socket.write_all(&frame).await.is_err() {
                return;
            }
        }
    }

    fn answer(&self, head: &RequestHead, mut body: Bytes) -> Option<BytesMut> {
        let v = head.version;
        Some(match head.api {
            ApiKey::ApiVersions => response(head, &api_versions(&APIS)),
            ApiKey::Metadata => response(head, &self.metadata(MetadataRequest::decode(&mut body, v).ok()?)),
            ApiKey::Fetch => response(head, &self.fetch(FetchRequest::decode(&mut body, v).ok()?)),
            ApiKey::Produce => response(head, &self.produce(ProduceRequest::decode(&mut body, v).ok()?)),
            ApiKey::ListOffsets => response(head, &self.list_offsets(ListOffsetsRequest::decode(&mut body, v).ok()?)),
            ApiKey::FindCoordinator => {
                let request = FindCoordinatorRequest::decode(&mut body, v).ok()?;
                let coordinators = request
                    .coordinator_keys
                    .into_iter()
                    .map(|key| {
                        Coordinator::default()
                            .with_key(key)
                            .with_node_id(BrokerId(1))
                            .with_host(StrBytes::from_static_str("127.0.0.1"))
                            .with_port(i32::from(self.port))
                    })
                    .collect();
                response(head, &FindCoordinatorResponse::default().with_coordinators(coordinators))
            }
            // No committed progress: every partition starts at the source's first offset.
            ApiKey::OffsetFetch => response(head, &OffsetFetchResponse::default()),
            ApiKey::OffsetCommit => {
                let request = OffsetCommitRequest::decode(&mut body, v).ok()?;
                let topics = request
                    .topics
                    .into_iter()
                    .map(|t| {
                        let partitions = t
                            .partitions
                            .iter()
                            .map(|p| OffsetCommitResponsePartition::default().with_partition_index(p.partition_index))
                            .collect();
                        OffsetCommitResponseTopic::default().with_name(t.name).with_partitions(partitions)
                    })
                    .collect();
                response(head, &OffsetCommitResponse::default().with_topics(topics))
            }
            ApiKey::InitProducerId => {
                response(head, &InitProducerIdResponse::default().with_producer_id(ProducerId(1000)))
            }
            ApiKey::CreateTopics => {
                let request = CreateTopicsRequest::decode(&mut body, v).ok()?;
                let mut topics = self.topics.lock().expect("not poisoned");
                let results = request
                    .topics
                    .into_iter()
                    .map(|t| {
                        let id = uuid::Uuid::from_u128(topics.len() as u128 + 1);
                        topics.insert(t.name.0.to_string(), (id, t.num_partitions));
                        CreatableTopicResult::default()
                            .with_name(t.name)
                            .with_topic_id(id)
                            .with_num_partitions(t.num_partitions)
                            .with_replication_factor(1)
                    })
                    .collect();
                response(head, &CreateTopicsResponse::default().with_topics(results))
            }
            ApiKey::AddPartitionsToTxn => {
                let request = AddPartitionsToTxnRequest::decode(&mut body, v).ok()?;
                let results = request
                    .v3_and_below_topics
                    .into_iter()
                    .map(|t| {
                        let partitions = t
                            .partitions
                            .iter()
                            .map(|&p| AddPartitionsToTxnPartitionResult::default().with_partition_index(p))
                            .collect();
                        AddPartitionsToTxnTopicResult::default().with_name(t.name).with_results_by_partition(partitions)
                    })
                    .collect();
                response(head, &AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results))
            }
            ApiKey::AddOffsetsToTxn => response(head, &AddOffsetsToTxnResponse::default()),
            ApiKey::TxnOffsetCommit => {
                let request = TxnOffsetCommitRequest::decode(&mut body, v).ok()?;
                let topics = request
                    .topics
                    .into_iter()
                    .map(|t| {
                        let partitions = t
                            .partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default().with_partition_index(p.partition_index)
                            })
                            .collect();
                        TxnOffsetCommitResponseTopic::default().with_name(t.name).with_partitions(partitions)
                    })
                    .collect();
                response(head, &TxnOffsetCommitResponse::default().with_topics(topics))
            }
            ApiKey::EndTxn => response(head, &EndTxnResponse::default()),
            // kferry reads the target's cluster id (its failover record names it) and node
            // count (the replication factor of its own topics) at start.
            ApiKey::DescribeCluster => response(
                head,
                &DescribeClusterResponse::default()
                    .with_cluster_id(StrBytes::from_static_str("fake"))
                    .with_controller_id(BrokerId(1))
                    .with_brokers(vec![describe_cluster_response::DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(1))
                        .with_host(StrBytes::from_static_str("127.0.0.1"))
                        .with_port(i32::from(self.port))]),
            ),
            _ => return None,
        })
    }

    fn metadata(&self, request: MetadataRequest) -> MetadataResponse {
        let known = self.topics.lock().expect("not poisoned").clone();
        let wanted: Vec<String> = match request.topics {
            None => known.keys().cloned().collect(),
            Some(topics) => topics.into_iter().filter_map(|t| t.name.map(|n| n.0.to_string())).collect(),
        };
        let topics = wanted
            .into_iter()
            .map(|topic: String| match known.get(&topic) {
                Some(&(id, partitions)) => {
                    MetadataResponseTopic::default().with_name(Some(name(&topic))).with_topic_id(id).with_partitions(
                        (0..partitions)
                            .map(|p| {
                                MetadataResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_leader_id(BrokerId(1))
                                    .with_replica_nodes(vec![BrokerId(1)])
                                    .with_isr_nodes(vec![BrokerId(1)])
                            })
                            .collect(),
                    )
                }
                // UNKNOWN_TOPIC_OR_PARTITION: kferry creates its state topic then.
                None => MetadataResponseTopic::default().with_name(Some(name(&topic))).with_error_code(3),
            })
            .collect();
        MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(1))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(i32::from(self.port))])
            .with_cluster_id(Some(StrBytes::from_static_str("fake")))
            .with_controller_id(BrokerId(1))
            .with_topics(topics)
    }

    /// Copies of the source batch from `offset`, within `limit` bytes (at least one batch
    /// when `first`, as Kafka returns an oversized first batch so consumers progress).
    fn records_from(&self, offset: i64, limit: usize, first: bool) -> Bytes {
        let Some(source) = &self.source else { return Bytes::new() };
        let size = source.batch.len();
        let left = ((source.end - offset).max(0) / source.records_per_batch) as usize;
        let count = (limit / size).max(usize::from(first)).min(left);
        let mut out = BytesMut::with_capacity(count * size);
        for i in 0..count as i64 {
            let start = out.len();
            out.extend_from_slice(&source.batch);
            // The base offset lies outside the CRC: the copy stays a valid batch.
            let base = offset + i * source.records_per_batch;
            out[start..start + 8].copy_from_slice(&base.to_be_bytes());
        }
        out.freeze()
    }

    fn fetch(&self, request: FetchRequest) -> FetchResponse {
        let end = self.source.as_ref().map_or(0, |s| s.end);
        let mut budget = usize::try_from(request.max_bytes).unwrap_or(0);
        let mut first = true;
        let responses = request
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let limit = budget.min(usize::try_from(p.partition_max_bytes).unwrap_or(0));
                        let records = self.records_from(p.fetch_offset, limit, first);
                        budget = budget.saturating_sub(records.len());
                        first &= records.is_empty();
                        PartitionData::default()
                            .with_partition_index(p.partition)
                            .with_high_watermark(end)
                            .with_last_stable_offset(end)
                            .with_aborted_transactions(Some(Vec::new()))
                            .with_preferred_read_replica(BrokerId(-1))
                            .with_records(Some(records))
                    })
                    .collect();
                FetchableTopicResponse::default()
                    .with_topic(t.topic)
                    .with_topic_id(t.topic_id)
                    .with_partitions(partitions)
            })
            .collect();
        FetchResponse::default().with_responses(responses)
    }

    fn produce(&self, request: ProduceRequest) -> ProduceResponse {
        let mut next_offsets = self.next_offsets.lock().expect("not poisoned");
        let responses = request
            .topic_data
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partition_data
                    .into_iter()
                    .map(|p| {
                        let records = p.records.unwrap_or_default();
                        self.produced_bytes.fetch_add(records.len() as u64, Ordering::Relaxed);
                        let mut offsets = 0i64;
                        for item in BatchIter::new(records) {
                            if let Ok(BatchItem::Batch(batch)) = item {
                                offsets += i64::from(batch.last_offset_delta()) + 1;
                                self.produced_records.fetch_add(batch.records_count() as u64, Ordering::Relaxed);
                            }
                        }
                        let next = next_offsets.entry((t.name.0.to_string(), p.index)).or_insert(0);
                        let base = *next;
                        *next += offsets;
                        PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_base_offset(base)
                            .with_log_append_time_ms(-1)
                    })
                    .collect();
                TopicProduceResponse::default().with_name(t.name).with_partition_responses(partitions)
            })
            .collect();
        ProduceResponse::default().with_responses(responses)
    }

    fn list_offsets(&self, request: ListOffsetsRequest) -> ListOffsetsResponse {
        let next_offsets = self.next_offsets.lock().expect("not poisoned");
        let topics = request
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let latest = match &self.source {
                            Some(source) if t.name.0.as_str() == TOPIC => source.end,
                            _ => next_offsets.get(&(t.name.0.to_string(), p.partition_index)).copied().unwrap_or(0),
                        };
                        // -2: earliest, -1: latest.
                        let offset = if p.timestamp == -2 { 0 } else { latest };
                        ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_timestamp(-1)
                            .with_offset(offset)
                    })
                    .collect();
                ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
            })
            .collect();
        ListOffsetsResponse::default().with_topics(topics)
    }
}

/// utime + stime of this process's threads whose name starts with `prefix`, in seconds.
fn thread_cpu(prefix: &str) -> f64 {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        // After the command: field 3 is state; utime and stime are fields 14 and 15.
        ticks += fields.get(11).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        ticks += fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    }
    ticks as f64 / ticks_per_second
}

/// (busy, all) core-seconds of the whole machine, from /proc/stat.
fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let get = |i: usize| values.get(i).copied().unwrap_or(0.0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    (busy / 100.0, (busy + get(3) + get(4)) / 100.0)
}

fn status_kib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0.0)
}

/// One case in this process: returns the Markdown row.
fn run_case(args: &Args, partitions: i32) -> Result<String, String> {
    let value = vec![b'v'; VALUE_BYTES];
    let keys: Vec<String> = (0..args.batch_records).map(|i| format!("key-{i:05}")).collect();
    let pairs: Vec<_> = keys.iter().map(|k| (Some(k.as_bytes()), Some(value.as_slice()))).collect();
    let batch = build_batch(&pairs, 1_700_000_000_000).into_bytes();
    let per_partition_batches = (args.mib as f64 * MIB / batch.len() as f64 / f64::from(partitions)).ceil() as i64;
    let records_per_batch = args.batch_records as i64;
    let end = per_partition_batches * records_per_batch;
    let total_records = end as u64 * partitions as u64;
    let total_bytes = per_partition_batches as f64 * batch.len() as f64 * f64::from(partitions);

    let fakes = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fake-rt")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let source = Fake::new(SOURCE_PORT, Some(SourceData { batch, records_per_batch, end }), partitions);
    let target = Fake::new(TARGET_PORT, None, partitions);
    for fake in [&source, &target] {
        let listener = fakes
            .block_on(TcpListener::bind(("127.0.0.1", fake.port)))
            .map_err(|e| format!("127.0.0.1:{}: {e}", fake.port))?;
        fakes.spawn(fake.clone().serve(listener));
    }

    let kferry = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kferry-rt")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut flow = FlowConfig::between("fake-source", "fake-target");
    flow.delivery = args.delivery;
    let (stop, stopped) = watch::channel(false);
    let (_topics_tx, topics) = watch::channel(Some(BTreeMap::from([(TOPIC.to_owned(), TOPIC.to_owned())])));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let (busy_before, all_before) = machine_cpu();
    let (kferry_before, fake_before) = (thread_cpu("kferry-rt"), thread_cpu("fake-rt"));
    let began = Instant::now();
    let handle = kferry.spawn(async move {
        let source = Cluster::connect("fake-source", &[format!("127.0.0.1:{SOURCE_PORT}")], ClientConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        let target = Cluster::connect("fake-target", &[format!("127.0.0.1:{TARGET_PORT}")], ClientConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        Replicator::new(&flow, source, target, topics).run(stopped).await.map_err(|e| e.to_string())
    });
    while target.produced_records.load(Ordering::Relaxed) < total_records {
        if began.elapsed() > CASE_LIMIT || handle.is_finished() {
            let state = if handle.is_finished() { "kferry stopped" } else { "time limit reached" };
            return Err(format!(
                "{partitions} partitions: {state} with {} of {total_records} records produced",
                target.produced_records.load(Ordering::Relaxed)
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = began.elapsed().as_secs_f64();
    let (kferry_cpu, fake_cpu) = (thread_cpu("kferry-rt") - kferry_before, thread_cpu("fake-rt") - fake_before);
    let (busy_after, all_after) = machine_cpu();
    let peak_rss = status_kib("VmHWM:") / 1024.0;
    stop.send_replace(true);
    let totals = kferry.block_on(handle).map_err(|e| e.to_string())??;
    let gib = total_bytes / MIB / 1024.0;
    let other = ((busy_after - busy_before) - kferry_cpu - fake_cpu).max(0.0);
    Ok(format!(
        "| {partitions} | {:.0} | {seconds:.2} | {:.0} | {:.0} | {kferry_cpu:.2} | {:.2} | {fake_cpu:.2} | {peak_rss:.0} \
         | {:.0} | {other:.1} of {:.1} | {} |",
        total_bytes / MIB,
        total_bytes / MIB / seconds,
        total_records as f64 / seconds,
        kferry_cpu / gib,
        totals.batches as f64 / totals.transactions.max(1) as f64,
        all_after - all_before,
        load.split_whitespace().next().unwrap_or("?"),
    ))
}

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KFERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(problem) => {
            eprintln!("ceiling: {problem}");
            return std::process::ExitCode::from(2);
        }
    };
    // One partition count: measure it here. Several: one child process each, so each case
    // has its own peak RSS.
    if let [partitions] = args.partitions[..] {
        return match run_case(&args, partitions) {
            Ok(row) => {
                println!("{row}");
                std::process::ExitCode::SUCCESS
            }
            Err(problem) => {
                eprintln!("ceiling: {problem}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    println!(
        "| partitions | MiB | seconds | MiB/s | records/s | kferry CPU s | kferry CPU s / GiB | fake brokers CPU s \
         | peak RSS MiB (fakes included) | batches per transaction | other processes CPU s of machine capacity \
         | load avg (1 min) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let Ok(exe) = std::env::current_exe() else { return std::process::ExitCode::FAILURE };
    let mut code = std::process::ExitCode::SUCCESS;
    for partitions in &args.partitions {
        let delivery = match args.delivery {
            Delivery::AtLeastOnce => "at_least_once",
            _ => "exactly_once",
        };
        let status = std::process::Command::new(&exe)
            .args([partitions.to_string(), "--mib".into(), args.mib.to_string()])
            .args(["--batch-records".into(), args.batch_records.to_string(), "--delivery".into(), delivery.into()])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            code = std::process::ExitCode::FAILURE;
        }
    }
    code
}
