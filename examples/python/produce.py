#!/usr/bin/env python3
"""Stream batches of records to kafka-gateway and print one ack per record, in order.

    pip install -r requirements.txt
    python produce.py [TARGET] [TOPIC]     # defaults: $KAFKA_GATEWAY_TARGET or 127.0.0.1:50051, orders

TARGET is HOST:PORT or http://HOST:PORT for plain HTTP/2, https://HOST:PORT for
TLS. A gateway serving TLS or asking for credentials takes the variables
`kafka-gateway produce` reads, all optional:

    KAFKA_GATEWAY_CA               CA certificates (PEM) that verify the gateway; default: the system's roots
    KAFKA_GATEWAY_CLIENT_CERT      a client certificate (PEM) and
    KAFKA_GATEWAY_CLIENT_KEY       its key, for a gateway started with --tls-client-ca
    KAFKA_GATEWAY_TLS_SERVER_NAME  verify the gateway's certificate for this name, not TARGET's host
    KAFKA_GATEWAY_TOKEN            sent as `authorization: Bearer <token>` (an API key or a JWT)

    KAFKA_GATEWAY_CA=ca.pem KAFKA_GATEWAY_TOKEN="$(cat token)" python produce.py https://gateway:50051 orders

The client stubs are generated from proto/kafka_gateway/v1/producer.proto when
the script starts (grpc_tools.protoc into a temporary directory), so nothing
generated is kept. Batch 1 carries a record for partition 999 on purpose: it
gets its own error (ERROR_CODE_UNKNOWN_PARTITION) while the records around it
are stored. The batches ask for compact acks: an ack of a record stored in
the batch's topic leaves its topic empty, and the response names it once
(see acked_topic).
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


def open_channel(target, ca=None, client_cert=None, client_key=None, server_name=None):
    """A channel to `target`: HOST:PORT or http://HOST:PORT in plaintext, https://HOST:PORT over TLS.

    Over TLS the gateway's certificate is verified against `ca` (PEM bytes; None:
    the system's roots) for the target's host, or for `server_name`. `client_cert`
    and `client_key` (PEM bytes) answer a gateway that requires client certificates.
    """
    if (client_cert is None) != (client_key is None):
        raise ValueError("a client certificate needs its key: give both, or neither")
    if target.startswith("https://"):
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=client_key, certificate_chain=client_cert)
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        return grpc.secure_channel(target.removeprefix("https://"), credentials, options)
    if ca or client_cert or server_name:
        raise ValueError(f"TLS settings need an https:// target, not {target}")
    return grpc.insecure_channel(target.removeprefix("http://"))


def produce(target, requests, token=None, **tls):
    """Send `requests` (ProduceRequests) on one Produce stream.

    Yields (request, response) pairs: the gateway answers every batch exactly
    once, in the order sent, with one result per record in record order.
    `token` goes as `authorization: Bearer <token>` (over plain http:// it travels
    in the clear); `tls` are open_channel's settings.
    """
    sent = []

    def outgoing():
        for request in requests:
            sent.append(request)  # remembered before gRPC sends it
            yield request

    metadata = [("authorization", f"Bearer {token}")] if token else None
    answered = 0
    with open_channel(target, **tls) as channel:
        for response in rpc.ProducerStub(channel).Produce(outgoing(), metadata=metadata):
            request = sent[answered]
            answered += 1
            if response.batch_id != request.batch_id or len(response.results) != len(request.records):
                raise RuntimeError(f"response {response.batch_id} does not match batch {request.batch_id}")
            yield request, response
    if answered != len(sent):
        raise RuntimeError(f"{len(sent)} batches sent, {answered} answered")


def acked_topic(response, ok):
    """The topic an ack names: its own, or, in a compact ack (empty), the response's."""
    return ok.topic or response.topic


def example_batches(topic):
    """Three batches of three records; batch 1's middle record names a partition that does not exist.

    compact_acks: each ack of a record stored in `topic` leaves RecordMetadata.topic
    empty and the response names the topic once (ProduceResponse.topic): less to
    encode and decode per record.
    """
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
        yield pb.ProduceRequest(batch_id=b, topic=topic, records=records, compact_acks=True)


def settings_from_env(env=os.environ):
    """produce()'s TLS files and token, from the variables at the top of this file."""
    def read(name):
        path = env.get(name)
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    return {
        "ca": read("KAFKA_GATEWAY_CA"),
        "client_cert": read("KAFKA_GATEWAY_CLIENT_CERT"),
        "client_key": read("KAFKA_GATEWAY_CLIENT_KEY"),
        "server_name": env.get("KAFKA_GATEWAY_TLS_SERVER_NAME") or None,
        "token": env.get("KAFKA_GATEWAY_TOKEN") or None,
    }


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("KAFKA_GATEWAY_TARGET", "127.0.0.1:50051")
    topic = sys.argv[2] if len(sys.argv) > 2 else "orders"
    acked = failed = 0
    for request, response in produce(target, example_batches(topic), **settings_from_env()):
        for i, result in enumerate(response.results):
            if result.HasField("ok"):
                at = result.ok
                acked += 1
                print(f"batch {response.batch_id} record {i}: ok {acked_topic(response, at)} "
                      f"partition {at.partition} offset {at.offset}")
            else:
                # Not stored, unless may_be_stored (it failed in flight). Sending the
                # same record again can only help when retriable is true.
                err = result.error
                failed += 1
                print(f"batch {response.batch_id} record {i}: error {pb.ErrorCode.Name(err.code)} "
                      f"retriable={err.retriable}: {err.message}")
    print(f"{acked} acked, {failed} failed")


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError) as e:  # a TLS file that cannot be read, settings that do not fit
        sys.exit(f"error: {e}")
    except grpc.RpcError as e:  # the stream itself broke: nothing after the last answered batch is known
        # UNAUTHENTICATED: the gateway says what is wrong with the token (or the client certificate).
        sys.exit(f"stream failed: {e.code().name}: {e.details()}")
