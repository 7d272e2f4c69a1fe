#!/usr/bin/env python3
"""Independent Kafka verifier: confluent-kafka (librdkafka), never kferry's own code.

Tests call it (path in $KFERRY_VERIFY) to create topics, write known data and read back what
a broker holds, so kferry never grades its own work.

  create-topic --bootstrap B --topic T --partitions N [--config k=v ...]
      prints {"topic", "partitions", "replication_factor", "config"} once every partition
      has a leader.
  produce --bootstrap B --topic T --count N --compression C [--partition P | --partitions P,P,...]
          [--transactional-id X [--txn-size S] [--abort-every K]] [--base-timestamp MS]
          [--value-bytes N]
      writes records 0..N-1 (see record()), record i to partition P or else round-robin over
      the partitions listed (default: all of them);
      prints a JSON summary (offsets per partition, committed/aborted counts and index ranges).
      Transactions hold S records (default 10); every K-th one (K, 2K, ...) is aborted.
  consume --bootstrap B --topic T [--isolation read_committed|read_uncommitted]
          [--expect N] [--timeout S]
      reads every partition from the beginning until all reach their end offset (and, with
      --expect, until at least N records arrived); prints one JSON object per record sorted by
      (partition, offset): partition, offset, key, value (base64, null kept), headers
      ([name, base64 or null]), timestamp, timestamp_type. A summary goes to stderr. Exit 0
      when complete, 1 on error, 2 on timeout (the records read so far are still printed).

Consumer groups (a subscribed consumer: joins the group, as applications do):

  group-consume --bootstrap B --topic T --group G [--per-partition N|P=N,...|all] [--isolation I]
                [--no-commit] [--hold-seconds S] [--timeout S]
      reads from the group's committed offsets (earliest where it has none): N records of
      every partition (or up to the end of each, without N), then commits the offset after
      the last record read of each partition (unless --no-commit), then stays a member for S
      seconds without reading more; prints the records read as consume does, and
      {"event": "committed"} on stderr once committed (a test waits for it before --hold).
      Exit 0 when every partition gave its N records (or reached its end), 2 on timeout.
  describe-group --bootstrap B --group G
      prints {"group", "state", "members", "offsets": {"topic/partition": offset}}.
  reset-group --bootstrap B --group G --topic T --offset P=O[,P=O...]
      sets the group's committed offsets (as kafka-consumer-groups --reset-offsets does);
      prints {"group", "offsets"}.

Topic planner checks (each prints one JSON object; the changing ones return once the broker
shows the change, so a describe right after them sees it):

  describe-topic --bootstrap B --topic T
      prints {"topic", "exists", "partitions", "replication_factor", "configs", "all_configs"}:
      configs holds only the topic's own overrides (source DYNAMIC_TOPIC_CONFIG), all_configs
      every config the broker reports (sensitive values are null). A missing topic prints
      exists false, 0 partitions, replication factor 0 and empty configs, and exits 0.
  list-topics --bootstrap B
      prints {"topics": [sorted names]}, internal topics (__consumer_offsets, ...) included.
  end-offsets --bootstrap B --topic T
      prints {"topic", "offsets": {"topic/partition": high watermark}} (the log end offset
      a consumer group's lag is measured against).
  add-partitions --bootstrap B --topic T --total N
      CreatePartitions to N in all; prints {"topic", "partitions"} once all N have a leader.
  alter-config --bootstrap B --topic T [--set K=V ...] [--delete K ...]
      IncrementalAlterConfigs (SET / DELETE); prints {"topic", "set", "deleted", "configs"}
      (configs: the topic's overrides afterwards).
  create-acl --bootstrap B --topic T --principal P --operation OP --permission PERM
             [--pattern LITERAL|PREFIXED] [--host H]
      creates one topic ACL (host default *, pattern default LITERAL); prints it as
      describe-acls does.
  describe-acls --bootstrap B [--topic T]
      prints {"acls": [{"resource_type", "name", "pattern", "principal", "host",
      "operation", "permission"}]} sorted; with --topic only the ACLs bound to exactly that
      topic name (any pattern type), else every ACL of the cluster. Kafka's names are used
      (resource type CLUSTER, which librdkafka calls BROKER). Needs a broker with an
      authorizer: without one this fails with SECURITY_DISABLED.

Every command takes --client-config K=V (repeatable): librdkafka settings added to each client
it makes, e.g. security.protocol=SSL, ssl.ca.location=..., ssl.certificate.location=...

Errors print {"error", "code", "command"} on stderr and exit 1.
"""

import argparse
import base64
import concurrent.futures
import json
import random
import socket
import struct
import sys
import time
import uuid

from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
# The operations a topic ACL can name.
ACL_OPERATIONS = ("ALL", "READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "DESCRIBE_CONFIGS",
                  "ALTER_CONFIGS")
TIMESTAMP_TYPES = {TIMESTAMP_CREATE_TIME: "create_time", TIMESTAMP_LOG_APPEND_TIME: "log_append_time"}


def b64(data):
    return None if data is None else base64.b64encode(data).decode("ascii")


def emit(obj, stream=sys.stdout):
    stream.write(json.dumps(obj, sort_keys=True) + "\n")
    stream.flush()


# ---------------------------------------------------------------- deterministic records


def record(i, base_timestamp, key_space=None, value_bytes=None):
    """Record i: a mix of null/empty keys and values, headers (repeated names, null and
    empty values) and compressible payloads, with an explicit create timestamp. With a
    key_space, keys repeat (key-{i % key_space}) and are never null, as a compacted topic
    needs. With value_bytes, every value is that long: its index, then bytes that do not
    compress (the same for the same i), for tests that measure volume."""
    if key_space:
        key = f"key-{i % key_space}".encode()
    elif i % 7 == 3:
        key = None
    elif i % 29 == 4:
        key = b""
    else:
        key = f"key-{i}".encode()
    if value_bytes:
        prefix = f"value-{i:08d}|".encode()
        value = prefix + random.Random(i).randbytes(max(0, value_bytes - len(prefix)))
    elif i % 11 == 5:
        value = None
    elif i % 13 == 6:
        value = b""
    else:
        value = (f"value-{i:08d}|" + "kferry-" * (i % 17)).encode()
    if i % 5 == 0:
        headers = [("index", str(i).encode()), ("empty", b""), ("null", None)]
    elif i % 5 == 1:
        headers = [("dup", b"first"), ("dup", b"second")]
    else:
        headers = None
    return {"key": key, "value": value, "headers": headers, "timestamp": base_timestamp + i}


# ---------------------------------------------------------------- helpers


def parse_configs(pairs, option="--config"):
    configs = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"{option} expects k=v, got {pair!r}")
        configs[name] = value
    return configs


def client_config(args):
    """bootstrap.servers plus the --client-config settings (security.protocol, ssl.*, sasl.*)."""
    conf = {"bootstrap.servers": args.bootstrap}
    conf.update(parse_configs(args.client_config, "--client-config"))
    return conf


def admin_client(args):
    return AdminClient(client_config(args))


def wait_until(check, timeout, what):
    """Polls check() (a truthy result ends the wait) until timeout seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise KafkaException(f"{what}: not seen after {timeout}s")
        time.sleep(0.1)


def partition_ids(client, topic, timeout):
    """Sorted partition ids of topic; fails when it does not exist."""
    meta = client.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        raise KafkaException(meta.error if meta is not None else f"topic {topic} not found")
    return sorted(meta.partitions)


def wait_for_leaders(admin, topic, partitions, timeout):
    """After CreateTopics the leaders appear in metadata a moment later; wait for them so a
    produce right after create-topic cannot hit UNKNOWN_TOPIC_OR_PARTITION."""
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is not None and meta.error is None and len(meta.partitions) == partitions:
            if all(p.leader >= 0 for p in meta.partitions.values()):
                return
        if time.monotonic() >= deadline:
            raise KafkaException(f"topic {topic}: partitions without leader after {timeout}s")
        time.sleep(0.1)


# ---------------------------------------------------------------- create-topic


def cmd_create_topic(args):
    admin = AdminClient(client_config(args))
    configs = parse_configs(args.config)
    new = NewTopic(args.topic, num_partitions=args.partitions,
                   replication_factor=args.replication_factor, config=configs)
    futures = admin.create_topics([new], operation_timeout=args.timeout, request_timeout=args.timeout)
    futures[args.topic].result(timeout=args.timeout)
    wait_for_leaders(admin, args.topic, args.partitions, args.timeout)
    emit({"topic": args.topic, "partitions": args.partitions,
          "replication_factor": args.replication_factor, "config": configs})
    return 0


def cmd_delete_topic(args):
    """Deletes a topic and waits until the cluster's metadata no longer lists it (so it can
    be created again at once)."""
    admin = AdminClient(client_config(args))
    futures = admin.delete_topics([args.topic], operation_timeout=args.timeout, request_timeout=args.timeout)
    futures[args.topic].result(timeout=args.timeout)
    deadline = time.monotonic() + args.timeout
    while args.topic in admin.list_topics(timeout=args.timeout).topics:
        if time.monotonic() > deadline:
            raise SystemExit(f"topic {args.topic} still listed {args.timeout}s after its deletion")
        time.sleep(0.2)
    emit({"deleted": args.topic})
    return 0


def cmd_delete_records(args):
    """Deletes the records of one partition below --offset (DeleteRecords: the log start
    moves up, as retention would move it); prints the new low watermark."""
    admin = AdminClient(client_config(args))
    tp = TopicPartition(args.topic, args.partition, args.offset)
    futures = admin.delete_records([tp], operation_timeout=args.timeout, request_timeout=args.timeout)
    result = futures[tp].result(timeout=args.timeout)
    emit({"topic": args.topic, "partition": args.partition, "low_watermark": result.low_watermark})
    return 0


# ---------------------------------------------------------------- produce


def producer_config(args):
    conf = {
        **client_config(args),
        "compression.type": args.compression,
        # Linger so several records share a batch: codecs and batch parsing get exercised.
        "linger.ms": args.linger_ms,
        "batch.num.messages": args.batch_records,
        "acks": "all",
        "enable.idempotence": True,
        "message.timeout.ms": int(args.timeout * 1000),
    }
    if args.transactional_id:
        conf["transactional.id"] = args.transactional_id
        conf["transaction.timeout.ms"] = 60000
    return conf


def transaction_plan(count, txn_size, abort_every):
    """[(first, end, aborted)] index ranges, one per transaction."""
    plan = []
    for number, first in enumerate(range(0, count, txn_size), start=1):
        aborted = abort_every > 0 and number % abort_every == 0
        plan.append((first, min(first + txn_size, count), aborted))
    return plan


class Sender:
    """Produces record i to its partition and keeps the delivery reports by index."""

    def __init__(self, producer, topic, partitions, base_timestamp, key_space=None, value_bytes=None):
        self.producer, self.topic = producer, topic
        self.partitions, self.base = partitions, base_timestamp
        self.key_space, self.value_bytes = key_space, value_bytes
        self.delivered, self.errors = {}, []

    def on_delivery(self, err, msg, index):
        if err is not None:
            self.errors.append({"index": index, "error": str(err)})
        else:
            self.delivered[index] = (msg.partition(), msg.offset())

    def send(self, i):
        rec = record(i, self.base, self.key_space, self.value_bytes)
        kwargs = {"partition": self.partitions[i % len(self.partitions)], "timestamp": rec["timestamp"],
                  "on_delivery": lambda err, msg: self.on_delivery(err, msg, i)}
        if rec["headers"] is not None:
            kwargs["headers"] = rec["headers"]
        while True:
            try:
                self.producer.produce(self.topic, value=rec["value"], key=rec["key"], **kwargs)
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                self.producer.poll(0.1)


def run_transactions(producer, sender, plan, timeout):
    producer.init_transactions(timeout)
    for first, end, aborted in plan:
        producer.begin_transaction()
        for i in range(first, end):
            sender.send(i)
        if aborted:
            # Flush first: abort would purge records still lingering in the client, and
            # aborted data is only worth testing once it sits in the log.
            producer.flush(timeout)
            producer.abort_transaction(timeout)
        else:
            producer.commit_transaction(timeout)


def offsets_by_partition(delivered):
    """{"partition": {"records", "first_offset", "last_offset"}} from index -> (partition, offset)."""
    result = {}
    for part, offset in delivered.values():
        entry = result.setdefault(str(part), {"records": 0, "first_offset": offset, "last_offset": offset})
        entry["records"] += 1
        entry["first_offset"] = min(entry["first_offset"], offset)
        entry["last_offset"] = max(entry["last_offset"], offset)
    return result


def cmd_produce(args):
    if args.abort_every and not args.transactional_id:
        raise SystemExit("--abort-every needs --transactional-id")
    base = args.base_timestamp
    if base is None:
        # Recent timestamps: old ones would fall to retention.ms, future ones could be refused.
        base = int(time.time() * 1000) - args.count
    producer = Producer(producer_config(args))
    if args.partition is not None:
        partitions = [args.partition]
    elif args.partitions:
        partitions = [int(p) for p in args.partitions.split(",")]
    else:
        partitions = partition_ids(producer, args.topic, args.timeout)
    sender = Sender(producer, args.topic, partitions, base, args.key_space, args.value_bytes)

    start = time.monotonic()
    if args.transactional_id:
        plan = transaction_plan(args.count, args.txn_size, args.abort_every)
        run_transactions(producer, sender, plan, args.timeout)
    else:
        plan = [(0, args.count, False)]
        for i in range(args.count):
            sender.send(i)
            producer.poll(0)
    undelivered = producer.flush(args.timeout)
    elapsed_ms = int((time.monotonic() - start) * 1000)

    aborted_ranges = [[first, end] for first, end, aborted in plan if aborted]
    aborted_count = sum(end - first for first, end in aborted_ranges)
    emit({
        "topic": args.topic,
        "count": args.count,
        "compression": args.compression,
        "base_timestamp": base,
        "partitions": offsets_by_partition(sender.delivered),
        "delivered": len(sender.delivered),
        "errors": sender.errors[:20],
        "undelivered": undelivered,
        "transactional": bool(args.transactional_id),
        "transactions": len(plan) if args.transactional_id else 0,
        "committed": args.count - aborted_count,
        "aborted": aborted_count,
        "aborted_ranges": aborted_ranges,
        "elapsed_ms": elapsed_ms,
    })
    ok = not sender.errors and undelivered == 0 and len(sender.delivered) == args.count
    return 0 if ok else 1


# ---------------------------------------------------------------- consume


def record_json(msg):
    ts_type, ts = msg.timestamp()
    return {
        "partition": msg.partition(),
        "offset": msg.offset(),
        "key": b64(msg.key()),
        "value": b64(msg.value()),
        "headers": [[name, b64(value)] for name, value in (msg.headers() or [])],
        "timestamp": ts,
        "timestamp_type": TIMESTAMP_TYPES.get(ts_type, "none"),
    }


def cmd_consume(args):
    consumer = Consumer({
        **client_config(args),
        # librdkafka insists on a group id; assign() never joins it and nothing is committed.
        "group.id": f"kferry-verify-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # Partition EOF is reported at the high watermark (the LSO under read_committed), also
        # when the log ends with a control record, which an offset comparison would not see.
        "enable.partition.eof": True,
        "isolation.level": args.isolation,
        "auto.offset.reset": "earliest",
    })
    deadline = time.monotonic() + args.timeout
    records, at_end, error, parts = [], set(), None, []
    try:
        parts = partition_ids(consumer, args.topic, args.timeout)
        if args.partitions:
            wanted = {int(p) for p in args.partitions.split(",")}
            parts = [p for p in parts if p in wanted]
        consumer.assign([TopicPartition(args.topic, p, -2) for p in parts])  # -2: beginning
        while True:
            enough = args.expect is None or len(records) >= args.expect
            if enough and len(at_end) == len(parts):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            msg = consumer.poll(min(0.5, left))
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    continue
                raise KafkaException(msg.error())
            at_end.discard(msg.partition())
            records.append(record_json(msg))
    except KafkaException as exc:
        error = str(exc)
    finally:
        consumer.close()
    records.sort(key=lambda r: (r["partition"], r["offset"]))
    for rec in records:
        emit(rec)
    complete = error is None and len(at_end) == len(parts) and (args.expect is None or len(records) >= args.expect)
    emit({"records": len(records), "expected": args.expect, "complete": complete,
          "partitions_at_end": sorted(at_end), "error": error}, sys.stderr)
    if error is not None:
        return 1
    return 0 if complete else 2


# ---------------------------------------------------------------- consumer groups


def limit_of(per_partition, partition):
    """--per-partition is N for every partition, or P=N,P=N,... (absent partitions: none), or
    all (up to the end of each, as without it)."""
    if per_partition is None or per_partition == "all":
        return None
    if "=" not in per_partition:
        return int(per_partition)
    limits = dict(item.split("=") for item in per_partition.split(","))
    return int(limits.get(str(partition), 0))


def cmd_group_consume(args):
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "isolation.level": args.isolation,
        "auto.offset.reset": "earliest",
    })
    deadline = time.monotonic() + args.timeout
    kept, done, parts, error = {}, set(), None, None
    try:
        parts = partition_ids(consumer, args.topic, args.timeout)
        consumer.subscribe([args.topic])
        while len(done) < len(parts) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    limit = limit_of(args.per_partition, msg.partition())
                    if limit is None or len(kept.get(msg.partition(), [])) >= limit:
                        done.add(msg.partition())
                    continue
                raise KafkaException(msg.error())
            records = kept.setdefault(msg.partition(), [])
            limit = limit_of(args.per_partition, msg.partition())
            if limit is not None and len(records) >= limit:
                continue  # read ahead of the limit: not consumed, never committed
            records.append(record_json(msg))
            if limit is not None and len(records) >= limit:
                done.add(msg.partition())
                consumer.pause([TopicPartition(args.topic, msg.partition())])
        if not args.no_commit:
            offsets = [TopicPartition(args.topic, p, r[-1]["offset"] + 1) for p, r in kept.items() if r]
            if offsets:
                consumer.commit(offsets=offsets, asynchronous=False)
            emit({"event": "committed", "offsets": {f"{args.topic}/{tp.partition}": tp.offset for tp in offsets}},
                 sys.stderr)
        if args.hold_seconds > 0:
            consumer.pause(consumer.assignment())
            hold_until = time.monotonic() + args.hold_seconds
            while time.monotonic() < hold_until:
                consumer.poll(0.2)
    except KafkaException as exc:
        error = str(exc)
    finally:
        consumer.close()
    for partition in sorted(kept):
        for rec in kept[partition]:
            emit(rec)
    complete = error is None and len(done) == len(parts)
    emit({"records": sum(len(r) for r in kept.values()), "complete": complete, "error": error}, sys.stderr)
    if error is not None:
        return 1
    return 0 if complete else 2


def cmd_describe_group(args):
    admin = admin_client(args)
    group = admin.describe_consumer_groups([args.group], request_timeout=args.timeout)[args.group].result(
        timeout=args.timeout)
    listed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(args.group)],
                                               request_timeout=args.timeout)[args.group].result(timeout=args.timeout)
    offsets = {f"{tp.topic}/{tp.partition}": tp.offset for tp in listed.topic_partitions if tp.offset >= 0}
    state = group.state.name if hasattr(group.state, "name") else str(group.state)
    emit({"group": args.group, "state": state, "members": len(group.members), "offsets": offsets})
    return 0


def cmd_reset_group(args):
    admin = admin_client(args)
    partitions = [TopicPartition(args.topic, int(p), int(o)) for p, o in
                  (item.split("=") for item in args.offset.split(","))]
    request = ConsumerGroupTopicPartitions(args.group, partitions)
    done = admin.alter_consumer_group_offsets([request], request_timeout=args.timeout)[args.group].result(
        timeout=args.timeout)
    emit({"group": args.group, "offsets": {f"{tp.topic}/{tp.partition}": tp.offset for tp in done.topic_partitions}})
    return 0


# ---------------------------------------------------------------- topic planner checks


def topic_description(admin, topic, timeout):
    """librdkafka's TopicDescription, or None when the broker does not know the topic."""
    futures = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout)
    try:
        return futures[topic].result(timeout=timeout)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return None
        raise


def topic_configs(admin, topic, timeout):
    """{name: ConfigEntry} of every config the broker reports for topic."""
    resource = ConfigResource(ResourceType.TOPIC, topic)
    futures = admin.describe_configs([resource], request_timeout=timeout)
    return futures[resource].result(timeout=timeout)


def overrides(entries):
    """The topic's own settings: configs whose source is DYNAMIC_TOPIC_CONFIG."""
    # librdkafka reports the source as a plain int; ConfigSource() accepts that and the enum.
    return {name: e.value for name, e in entries.items()
            if ConfigSource(e.source) == ConfigSource.DYNAMIC_TOPIC_CONFIG}


def cmd_describe_topic(args):
    admin = admin_client(args)
    desc = topic_description(admin, args.topic, args.timeout)
    if desc is None:
        emit({"topic": args.topic, "exists": False, "partitions": 0, "replication_factor": 0,
              "configs": {}, "all_configs": {}})
        return 0
    entries = topic_configs(admin, args.topic, args.timeout)
    emit({
        "topic": args.topic,
        "exists": True,
        "partitions": len(desc.partitions),
        "replication_factor": max((len(p.replicas) for p in desc.partitions), default=0),
        "leaders": {str(p.id): (p.leader.id if p.leader is not None else -1) for p in desc.partitions},
        "replicas": {str(p.id): [r.id for r in p.replicas] for p in desc.partitions},
        "configs": overrides(entries),
        "all_configs": {name: e.value for name, e in entries.items()},
    })
    return 0


def cmd_list_topics(args):
    meta = admin_client(args).list_topics(timeout=args.timeout)
    emit({"topics": sorted(meta.topics)})
    return 0


def cmd_end_offsets(args):
    consumer = Consumer({**client_config(args), "group.id": f"kferry-verify-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    try:
        offsets = {}
        for p in partition_ids(consumer, args.topic, args.timeout):
            _, high = consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=args.timeout)
            offsets[f"{args.topic}/{p}"] = high
    finally:
        consumer.close()
    emit({"topic": args.topic, "offsets": offsets})
    return 0


def cmd_add_partitions(args):
    admin = admin_client(args)
    futures = admin.create_partitions([NewPartitions(args.topic, args.total)],
                                      operation_timeout=args.timeout, request_timeout=args.timeout)
    futures[args.topic].result(timeout=args.timeout)
    wait_for_leaders(admin, args.topic, args.total, args.timeout)
    emit({"topic": args.topic, "partitions": args.total})
    return 0


def cmd_alter_config(args):
    to_set = parse_configs(args.set, "--set")
    to_delete = sorted(set(args.delete or []))
    if not to_set and not to_delete:
        raise SystemExit("alter-config needs at least one --set or --delete")
    both = set(to_set) & set(to_delete)
    if both:
        raise SystemExit(f"both set and deleted: {sorted(both)}")
    changes = [ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET) for name, value in to_set.items()]
    changes += [ConfigEntry(name, None, incremental_operation=AlterConfigOpType.DELETE) for name in to_delete]
    resource = ConfigResource(ResourceType.TOPIC, args.topic, incremental_configs=changes)
    admin = admin_client(args)
    futures = admin.incremental_alter_configs([resource], request_timeout=args.timeout)
    futures[resource].result(timeout=args.timeout)

    def applied():
        current = overrides(topic_configs(admin, args.topic, args.timeout))
        done = all(current.get(k) == v for k, v in to_set.items()) and not any(k in current for k in to_delete)
        # In a tuple: a topic left without overrides ({}) is done, not falsy.
        return (current,) if done else None

    (current,) = wait_until(applied, args.timeout, f"config change of topic {args.topic}")
    emit({"topic": args.topic, "set": to_set, "deleted": to_delete, "configs": current})
    return 0


# librdkafka names Kafka's resource type 4 (CLUSTER) BROKER.
RESOURCE_NAMES = {"BROKER": "CLUSTER"}


def acl_json(binding):
    return {
        "resource_type": RESOURCE_NAMES.get(binding.restype.name, binding.restype.name),
        "name": binding.name,
        "pattern": binding.resource_pattern_type.name,
        "principal": binding.principal,
        "host": binding.host,
        "operation": binding.operation.name,
        "permission": binding.permission_type.name,
    }


def acl_sort_key(acl):
    return tuple(acl[k] for k in ("resource_type", "name", "pattern", "principal", "host", "operation", "permission"))


def recv_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise KafkaException("connection closed by the broker")
        data += chunk
    return data


def describe_acls_error(bootstrap, timeout):
    """(error code, message) of a DescribeAcls request matching every ACL, sent straight to
    the first bootstrap broker. librdkafka (2.16 too) drops DescribeAcls' top-level error code
    (rd_kafka_DescribeAclsResponse_parse returns NO_ERROR whatever the code was), so a broker
    without authorizer (SECURITY_DISABLED) or a refusal would pass for an empty list."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    client_id = b"kferry-verify"
    # Request header v1 (api key 29, version 1, correlation id 1, client id), then the v1
    # filter: resource type ANY, name null, pattern ANY, principal null, host null,
    # operation ANY, permission ANY. v1 is in every broker from 2.0 to 4.x.
    request = struct.pack(">hhih", 29, 1, 1, len(client_id)) + client_id
    request += struct.pack(">bhbhhbb", 1, -1, 1, -1, -1, 1, 1)
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", recv_exact(sock, 4))
        response = recv_exact(sock, size)
    # Response header v0 (correlation id), throttle_time_ms, error_code, error_message.
    _, _, code, length = struct.unpack(">iihh", response[:12])
    message = response[12:12 + length].decode("utf-8", "replace") if length >= 0 else None
    return code, message


def describe_acls(admin, topic, timeout, bootstrap):
    if topic is None:
        flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                               AclOperation.ANY, AclPermissionType.ANY)
    else:
        flt = AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.ANY, None, None,
                               AclOperation.ANY, AclPermissionType.ANY)
    bindings = admin.describe_acls(flt, request_timeout=timeout).result(timeout=timeout)
    if not bindings:  # an error answer carries no ACLs: only then can one have been dropped
        code, message = describe_acls_error(bootstrap, timeout)
        if code != 0:
            raise KafkaException(KafkaError(code, message or None))
    return sorted((acl_json(b) for b in bindings), key=acl_sort_key)


def cmd_create_acl(args):
    binding = AclBinding(ResourceType.TOPIC, args.topic, ResourcePatternType[args.pattern], args.principal,
                         args.host, AclOperation[args.operation], AclPermissionType[args.permission])
    admin = admin_client(args)
    futures = admin.create_acls([binding], request_timeout=args.timeout)
    futures[binding].result(timeout=args.timeout)
    wanted = acl_json(binding)
    wait_until(lambda: wanted in describe_acls(admin, args.topic, args.timeout, args.bootstrap), args.timeout,
               f"ACL {wanted}")
    emit(wanted)
    return 0


def cmd_describe_acls(args):
    emit({"acls": describe_acls(admin_client(args), args.topic, args.timeout, args.bootstrap)})
    return 0


# ---------------------------------------------------------------- command line


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, topic="required"):
        p.add_argument("--bootstrap", required=True)
        if topic is not None:
            p.add_argument("--topic", required=topic == "required")
        p.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
        p.add_argument("--client-config", action="append", metavar="K=V",
                       help="librdkafka setting for every client, e.g. security.protocol=SSL")

    p = sub.add_parser("create-topic")
    common(p)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--replication-factor", type=int, default=1)
    p.add_argument("--config", action="append", metavar="K=V")
    p.set_defaults(func=cmd_create_topic)

    p = sub.add_parser("delete-topic")
    common(p)
    p.set_defaults(func=cmd_delete_topic)

    p = sub.add_parser("delete-records")
    common(p)
    p.add_argument("--partition", type=int, required=True)
    p.add_argument("--offset", type=int, required=True, help="records below it are deleted")
    p.set_defaults(func=cmd_delete_records)

    p = sub.add_parser("produce")
    common(p)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--compression", choices=CODECS, default="none")
    p.add_argument("--partition", type=int)
    p.add_argument("--partitions", metavar="P,P,...", help="round-robin over these partitions only")
    p.add_argument("--transactional-id")
    p.add_argument("--txn-size", type=int, default=10, help="records per transaction (default 10)")
    p.add_argument("--abort-every", type=int, default=0, help="abort transactions K, 2K, ... (0: none)")
    p.add_argument("--base-timestamp", type=int, help="timestamp of record 0 in ms (default: now - count)")
    p.add_argument("--linger-ms", type=int, default=20)
    p.add_argument("--batch-records", type=int, default=10000,
                   help="most records per batch (batch.num.messages; 1: one batch per record)")
    p.add_argument("--key-space", type=int, help="keys repeat over N values and are never null (compacted topics)")
    p.add_argument("--value-bytes", type=int, help="every value N bytes long, incompressible (volume tests)")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("consume")
    common(p)
    p.add_argument("--isolation", choices=("read_committed", "read_uncommitted"), default="read_uncommitted")
    p.add_argument("--expect", type=int, help="wait for at least N records")
    p.add_argument("--partitions", help="P,P,... only these partitions (default: all)")
    p.set_defaults(func=cmd_consume)

    p = sub.add_parser("group-consume")
    common(p)
    p.add_argument("--group", required=True)
    p.add_argument("--per-partition", help="N, or P=N,P=N,... per partition, or all")
    p.add_argument("--isolation", choices=("read_committed", "read_uncommitted"), default="read_committed")
    p.add_argument("--no-commit", action="store_true")
    p.add_argument("--hold-seconds", type=float, default=0.0)
    p.set_defaults(func=cmd_group_consume)

    p = sub.add_parser("describe-group")
    common(p, topic=None)
    p.add_argument("--group", required=True)
    p.set_defaults(func=cmd_describe_group)

    p = sub.add_parser("reset-group")
    common(p)
    p.add_argument("--group", required=True)
    p.add_argument("--offset", required=True, metavar="P=O,...")
    p.set_defaults(func=cmd_reset_group)

    p = sub.add_parser("describe-topic")
    common(p)
    p.set_defaults(func=cmd_describe_topic)

    p = sub.add_parser("list-topics")
    common(p, topic=None)
    p.set_defaults(func=cmd_list_topics)

    p = sub.add_parser("end-offsets")
    common(p)
    p.set_defaults(func=cmd_end_offsets)

    p = sub.add_parser("add-partitions")
    common(p)
    p.add_argument("--total", type=int, required=True, help="partition count afterwards")
    p.set_defaults(func=cmd_add_partitions)

    p = sub.add_parser("alter-config")
    common(p)
    p.add_argument("--set", action="append", metavar="K=V")
    p.add_argument("--delete", action="append", metavar="K")
    p.set_defaults(func=cmd_alter_config)

    p = sub.add_parser("create-acl")
    common(p)
    p.add_argument("--principal", required=True, help="e.g. User:alice")
    p.add_argument("--operation", required=True, choices=ACL_OPERATIONS)
    p.add_argument("--permission", required=True, choices=("ALLOW", "DENY"))
    p.add_argument("--pattern", choices=("LITERAL", "PREFIXED"), default="LITERAL")
    p.add_argument("--host", default="*")
    p.set_defaults(func=cmd_create_acl)

    p = sub.add_parser("describe-acls")
    common(p, topic="optional")
    p.set_defaults(func=cmd_describe_acls)

    args = parser.parse_args(argv)
    if getattr(args, "txn_size", 1) < 1:
        parser.error("--txn-size must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        return args.func(args)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        code = err.name() if isinstance(err, KafkaError) else None
        emit({"error": str(exc), "code": code, "command": args.command}, sys.stderr)
        return 1
    except concurrent.futures.TimeoutError:  # an admin future not done within --timeout
        emit({"error": f"no answer within {args.timeout}s", "code": "_TIMED_OUT", "command": args.command},
             sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
