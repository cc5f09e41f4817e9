#!/usr/bin/env python3
"""Read records back from Kafka and compare them with what the gateway acknowledged.

    python verify_consumed.py EXPECTED.json     # brokers from $KAFKA_BOOTSTRAP_SERVERS

EXPECTED.json is a list of acknowledged records, each
    {"topic": "t", "partition": 0, "offset": 7,
     "key": "<base64>" | null, "value": "<base64>" | null,
     "headers": [{"key": "k", "value": "<base64>"}, ...],
     "timestamp_ms": 1700000000000}          # optional: the create time that was sent
Each partition is read by assignment (no consumer group) from its lowest
expected offset to its highest. Every expected record must be there with the
same key, value (null stays null), headers (order and duplicates kept) and,
when given, create time; and no other record may sit in between (no
duplicates, nothing extra stored).
"""

import base64
import json
import os
import sys
import time
import uuid

from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, KafkaError, TopicPartition


def b64(data):
    return None if data is None else base64.b64encode(data).decode("ascii")


def unb64(text):
    return None if text is None else base64.b64decode(text)


def expected_record(topic, partition, offset, key, value, headers, timestamp_ms=None):
    """One entry of EXPECTED.json; headers are (key, bytes) pairs."""
    entry = {
        "topic": topic, "partition": partition, "offset": offset,
        "key": b64(key), "value": b64(value),
        "headers": [{"key": k, "value": b64(v)} for k, v in headers],
    }
    if timestamp_ms is not None:
        entry["timestamp_ms"] = timestamp_ms
    return entry


def consume(bootstrap_servers, expected, timeout_s=30.0):
    """Return {(topic, partition, offset): message} for every offset in each partition's expected range."""
    ranges = {}
    for e in expected:
        tp = (e["topic"], e["partition"])
        lo, hi = ranges.get(tp, (e["offset"], e["offset"]))
        ranges[tp] = (min(lo, e["offset"]), max(hi, e["offset"]))
    consumer = Consumer({
        "bootstrap.servers": bootstrap_servers,
        "group.id": f"verify-consumed-{uuid.uuid4()}",  # required by the client; never joined
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    found = {}
    try:
        consumer.assign([TopicPartition(t, p, lo) for (t, p), (lo, _) in ranges.items()])
        pending = set(ranges)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            tp = (msg.topic(), msg.partition())
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"consuming {tp}: {msg.error()}")
            lo, hi = ranges[tp]
            if lo <= msg.offset() <= hi:
                found[(msg.topic(), msg.partition(), msg.offset())] = msg
            if msg.offset() >= hi:
                pending.discard(tp)
        if pending:
            raise RuntimeError(f"timed out after {timeout_s}s before reaching the last expected offset of {sorted(pending)}")
    finally:
        consumer.close()
    return found


def verify(bootstrap_servers, expected, timeout_s=30.0):
    """Return a list of mismatches (empty when everything was read back as expected)."""
    found = consume(bootstrap_servers, expected, timeout_s)
    problems = []
    wanted = set()
    for e in expected:
        where = (e["topic"], e["partition"], e["offset"])
        wanted.add(where)
        msg = found.get(where)
        if msg is None:
            problems.append(f"{where}: not found")
            continue
        got_headers = [{"key": k, "value": b64(v)} for k, v in (msg.headers() or [])]
        for field, got, want in [
            ("key", b64(msg.key()), e["key"]),
            ("value", b64(msg.value()), e["value"]),
            ("headers", got_headers, e["headers"]),
        ]:
            if got != want:
                problems.append(f"{where}: {field} is {got!r}, expected {want!r}")
        if "timestamp_ms" in e and msg.timestamp() != (TIMESTAMP_CREATE_TIME, e["timestamp_ms"]):
            problems.append(f"{where}: timestamp is {msg.timestamp()}, expected create time {e['timestamp_ms']}")
    for where in sorted(set(found) - wanted):
        problems.append(f"{where}: unexpected record (key {found[where].key()!r}) between expected offsets")
    return problems


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} EXPECTED.json  (with KAFKA_BOOTSTRAP_SERVERS set)")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        sys.exit("KAFKA_BOOTSTRAP_SERVERS is not set")
    with open(sys.argv[1]) as f:
        expected = json.load(f)
    if not expected:
        sys.exit(f"{sys.argv[1]} lists no records: nothing to verify")
    problems = verify(bootstrap, expected)
    for p in problems:
        print(f"MISMATCH {p}")
    if problems:
        sys.exit(f"{len(problems)} mismatches in {len(expected)} records")
    partitions = len({(e["topic"], e["partition"]) for e in expected})
    print(f"verified {len(expected)} records in {partitions} partitions: keys, values, headers and offsets match")


if __name__ == "__main__":
    main()
