#!/usr/bin/env python3
"""Write a Kafka transaction through kafka-gateway, and watch a read_committed consumer.

    pip install -r requirements.txt
    python transaction.py [TARGET] [BOOTSTRAP] [TOPIC] [TRANSACTIONAL_ID]
        # defaults: $KAFKA_GATEWAY_TARGET or 127.0.0.1:50051, $KAFKA_BOOTSTRAP_SERVERS
        # or 127.0.0.1:9092 (the Kafka the gateway writes to), orders, orders-writer-1

The stream's first request names a transactional id, which makes the stream
transactional. Batches 0 and 1 are one transaction, over two partitions;
batch 1 asks for the commit. The gateway answers both batches only once the
commit succeeded, so every `ok` means "committed". Batch 2 starts the next
transaction, and half-closing the stream commits it.

A consumer with isolation.level=read_committed polls the topic after batch 0
went out, before the commit: on Kafka it sees nothing of the transaction
(the gateway's embedded broker is no Kafka here: it serves every record to
every consumer, committed or not). After the commit it sees all of it at once.

Exits 0 when every record was acked, the acks came only after the commit, and
the consumer read every committed record where its ack says. With
KAFKA_EXPECT_READ_COMMITTED=1 (a real Kafka), also only when the consumer saw
nothing before the commit.
"""

import os
import sys
import time

import grpc
from confluent_kafka import Consumer, KafkaException, TopicPartition

from produce import acked_topic, open_channel, pb, rpc, settings_from_env


def transaction_batches(topic, transactional_id, before_commit):
    """The requests; `before_commit()` runs once batch 0 is sent, before batch 1 asks for the commit."""
    first = [pb.Record(key=f"order-{i}".encode(), value=f"order {i}".encode(), partition=i % 2)
             for i in range(3)]
    yield pb.ProduceRequest(batch_id=0, topic=topic, records=first, transactional_id=transactional_id)
    before_commit()
    second = [pb.Record(key=b"order-3", value=b"order 3", partition=1)]
    yield pb.ProduceRequest(batch_id=1, topic=topic, records=second, commit=True)
    # The next transaction: committed by the half-close that ends the stream.
    third = [pb.Record(key=b"order-4", value=b"order 4", partition=0)]
    yield pb.ProduceRequest(batch_id=2, topic=topic, records=third)


def read_committed(bootstrap, topic, partitions, start):
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "kafka-gateway-transaction-example",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
    })
    consumer.assign([TopicPartition(topic, p, start.get(p, 0)) for p in partitions])
    return consumer


def poll_for(consumer, seconds):
    """Records read within `seconds`: (partition, offset, value)."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None or message.error():
            continue
        seen.append((message.partition(), message.offset(), message.value()))
    return seen


def main():
    args = sys.argv[1:]
    target = args[0] if len(args) > 0 else os.environ.get("KAFKA_GATEWAY_TARGET", "127.0.0.1:50051")
    bootstrap = args[1] if len(args) > 1 else os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    topic = args[2] if len(args) > 2 else "orders"
    transactional_id = args[3] if len(args) > 3 else "orders-writer-1"
    settings = settings_from_env()
    token = settings.pop("token")

    # Where the partitions end now (0 for a topic not created yet): the
    # consumer reads from there.
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "kafka-gateway-transaction-probe"})
    start = {}
    for p in (0, 1):
        try:
            start[p] = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        except KafkaException:
            start[p] = 0
    probe.close()
    consumer = read_committed(bootstrap, topic, (0, 1), start)

    answered = []
    early = []
    answered_before_commit = []

    def before_commit():
        # Batch 0 is on its way; its transaction is open.
        time.sleep(1)
        early.extend(poll_for(consumer, 2))
        answered_before_commit.extend(answered)
        print(f"before the commit: {len(answered)} batches answered, the read_committed consumer saw "
              f"{len(early)} records of the transaction")
        if early:
            print("  (this broker serves uncommitted records to read_committed consumers, as the "
                  "embedded one does; Kafka shows none before the commit)")

    metadata = [("authorization", f"Bearer {token}")] if token else None
    acks = []
    with open_channel(target, **settings) as channel:
        requests = transaction_batches(topic, transactional_id, before_commit)
        for response in rpc.ProducerStub(channel).Produce(requests, metadata=metadata):
            answered.append(response.batch_id)
            for i, result in enumerate(response.results):
                if not result.HasField("ok"):
                    err = result.error
                    sys.exit(f"batch {response.batch_id} record {i}: {pb.ErrorCode.Name(err.code)}: {err.message}")
                at = result.ok
                acks.append((at.partition, at.offset))
                print(f"batch {response.batch_id} record {i}: committed in {acked_topic(response, at)} "
                      f"partition {at.partition} offset {at.offset}")

    late = early + poll_for(consumer, 3)
    consumer.close()
    seen = {(p, o) for p, o, _ in late}
    print(f"after the commits: the read_committed consumer saw {len(seen)} of {len(acks)} records")
    if answered_before_commit:
        sys.exit(f"batches answered before their commit: {answered_before_commit}")
    if early and os.environ.get("KAFKA_EXPECT_READ_COMMITTED") == "1":
        # On Kafka (not the embedded broker), nothing of an open transaction is visible.
        sys.exit(f"the read_committed consumer saw {len(early)} records before the commit")
    if answered != [0, 1, 2]:
        sys.exit(f"batches answered out of order: {answered}")
    missing = [ack for ack in acks if ack not in seen]
    if missing:
        sys.exit(f"committed records not read back: {missing}")


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as e:
        # ABORTED: fenced by a newer stream with the same transactional id, or
        # the transactional producer failed; PERMISSION_DENIED: the policy
        # grants the caller no such transactional id.
        sys.exit(f"stream failed: {e.code().name}: {e.details()}")
