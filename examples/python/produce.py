#!/usr/bin/env python3
"""Stream batches of records to kafka-gateway and print one ack per record, in order.

    pip install -r requirements.txt
    python produce.py [TARGET] [TOPIC]     # defaults: $KAFKA_GATEWAY_TARGET or 127.0.0.1:50051, orders

The client stubs are generated from proto/kafka_gateway/v1/producer.proto when
the script starts (grpc_tools.protoc into a temporary directory), so nothing
generated is kept. Batch 1 carries a record for partition 999 on purpose: it
gets its own error (ERROR_CODE_UNKNOWN_PARTITION) while the records around it
are stored.
"""

import os
import pathlib
import sys
import tempfile

import grpc
from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[2] / "proto"
PROTO_FILE = "kafka_gateway/v1/producer.proto"


def load_stubs(proto_root=PROTO_ROOT):
    """Generate the message and service modules from the .proto and import them."""
    with tempfile.TemporaryDirectory(prefix="kafka_gateway_stubs_") as out:
        status = protoc.main([
            "grpc_tools.protoc", f"-I{proto_root}",
            f"--python_out={out}", f"--grpc_python_out={out}", PROTO_FILE,
        ])
        if status != 0:
            raise RuntimeError(f"protoc failed on {proto_root / PROTO_FILE} (exit {status})")
        sys.path.insert(0, out)
        try:
            from kafka_gateway.v1 import producer_pb2, producer_pb2_grpc
        finally:
            sys.path.remove(out)
    return producer_pb2, producer_pb2_grpc


pb, rpc = load_stubs()


def produce(target, requests):
    """Send `requests` (ProduceRequests) on one Produce stream.

    Yields (request, response) pairs: the gateway answers every batch exactly
    once, in the order sent, with one result per record in record order.
    """
    sent = []

    def outgoing():
        for request in requests:
            sent.append(request)  # remembered before gRPC sends it
            yield request

    answered = 0
    with grpc.insecure_channel(target) as channel:
        for response in rpc.ProducerStub(channel).Produce(outgoing()):
            request = sent[answered]
            answered += 1
            if response.batch_id != request.batch_id or len(response.results) != len(request.records):
                raise RuntimeError(f"response {response.batch_id} does not match batch {request.batch_id}")
            yield request, response
    if answered != len(sent):
        raise RuntimeError(f"{len(sent)} batches sent, {answered} answered")


def example_batches(topic):
    """Three batches of three records; batch 1's middle record names a partition that does not exist."""
    for b in range(3):
        records = [
            pb.Record(
                key=f"customer-{i}".encode(),
                value=f"order {b}-{i}".encode(),
                headers=[pb.Header(key="source", value=b"python")],
            )
            for i in range(3)
        ]
        if b == 1:
            records[1].partition = 999
        yield pb.ProduceRequest(batch_id=b, topic=topic, records=records)


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("KAFKA_GATEWAY_TARGET", "127.0.0.1:50051")
    topic = sys.argv[2] if len(sys.argv) > 2 else "orders"
    acked = failed = 0
    for request, response in produce(target, example_batches(topic)):
        for i, result in enumerate(response.results):
            if result.HasField("ok"):
                at = result.ok
                acked += 1
                print(f"batch {response.batch_id} record {i}: ok {at.topic} partition {at.partition} offset {at.offset}")
            else:
                # Not stored. Sending the same record again can only help when retriable is true.
                err = result.error
                failed += 1
                print(f"batch {response.batch_id} record {i}: error {pb.ErrorCode.Name(err.code)} "
                      f"retriable={err.retriable}: {err.message}")
    print(f"{acked} acked, {failed} failed")


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as e:  # the stream itself broke: nothing after the last answered batch is known
        sys.exit(f"stream failed: {e.code().name}: {e.details()}")
