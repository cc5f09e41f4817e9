#!/usr/bin/env python3
"""End-to-end test of the Python example against a running gateway.

    KAFKA_GATEWAY_TARGET=127.0.0.1:50051 KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python test_example.py

KAFKA_BOOTSTRAP_SERVERS are the brokers the gateway produces to; records are
read back from there. KAFKA_TEST_TOPIC names an existing topic to use (for a
broker that does not create topics on first use); otherwise each run makes up a
new topic name. Exits non-zero when anything fails.

The TLS tests need a second gateway producing to the same brokers, serving TLS,
requiring a client certificate (--tls-client-ca) and an API key (--api-keys),
and stamping the principal into a header (--principal-header); .ci/clients.sh
starts one. They are skipped, and say so, unless these are set:

    KAFKA_TEST_TLS_TARGET         https://HOST:PORT of that gateway
    KAFKA_TEST_TLS_CA             the CA (PEM) that signed its certificate and the client's
    KAFKA_TEST_TLS_CLIENT_CERT    a client certificate (PEM) and
    KAFKA_TEST_TLS_CLIENT_KEY     its key
    KAFKA_TEST_TOKEN              an API key in its --api-keys file
    KAFKA_TEST_PRINCIPAL          the API key's principal
    KAFKA_TEST_PRINCIPAL_HEADER   its --principal-header
"""

import base64
import json
import os
import re
import subprocess
import sys
import traceback
import uuid
from collections import defaultdict

import grpc

import produce
from produce import pb
from verify_consumed import expected_record, verify

HERE = os.path.dirname(os.path.abspath(__file__))
BAD_TOPIC = "not a valid topic!"


def env(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{name} must be set (see the top of {os.path.basename(__file__)})")
    return value


TARGET = env("KAFKA_GATEWAY_TARGET")
BOOTSTRAP = env("KAFKA_BOOTSTRAP_SERVERS")
TOPIC = os.environ.get("KAFKA_TEST_TOPIC") or f"kafka-gateway-python-{uuid.uuid4().hex[:12]}"
TLS_TARGET = os.environ.get("KAFKA_TEST_TLS_TARGET")


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def check_in_order(acks):
    """acks: (partition, offset) in send order; offsets must grow within each partition."""
    last = {}
    for partition, offset in acks:
        check(offset > last.get(partition, -1),
              f"partition {partition}: offset {offset} acked after offset {last.get(partition)}")
        last[partition] = offset
    return last


def check_consumed(expected):
    problems = verify(BOOTSTRAP, expected)
    check(not problems, "read back differs:\n  " + "\n  ".join(problems))
    print(f"  read back {len(expected)} records: keys, values, headers and offsets match")


def run_example_script(target, env=None, stamped=()):
    """Runs produce.py TARGET TOPIC and checks its output and the records stored.

    `stamped`: the headers the gateway adds after the record's own.
    """
    run = subprocess.run([sys.executable, os.path.join(HERE, "produce.py"), target, TOPIC],
                         capture_output=True, text=True, timeout=60, env=env)
    check(run.returncode == 0, f"produce.py exited {run.returncode}:\n{run.stdout}{run.stderr}")
    lines = run.stdout.splitlines()
    check(len(lines) == 10 and lines[-1] == "8 acked, 1 failed", f"unexpected output:\n{run.stdout}")
    acks, expected = [], []
    for line, (b, i) in zip(lines[:-1], [(b, i) for b in range(3) for i in range(3)], strict=True):
        prefix = f"batch {b} record {i}: "
        check(line.startswith(prefix), f"line {line!r}: expected it to start with {prefix!r} (out of order?)")
        if (b, i) == (1, 1):
            check(line.startswith(prefix + "error ERROR_CODE_UNKNOWN_PARTITION retriable=False: "),
                  f"the partition-999 record: {line!r}")
            continue
        m = re.fullmatch(re.escape(prefix) + rf"ok {re.escape(TOPIC)} partition (\d+) offset (\d+)", line)
        check(m, f"expected an ack: {line!r}")
        partition, offset = int(m[1]), int(m[2])
        acks.append((partition, offset))
        expected.append(expected_record(TOPIC, partition, offset, f"customer-{i}".encode(),
                                        f"order {b}-{i}".encode(), [("source", b"python"), *stamped]))
    check_in_order(acks)
    print("  " + "\n  ".join(lines))
    check_consumed(expected)


def test_example_script():
    """`python produce.py TARGET TOPIC` prints 8 acks in order and one error for exactly the bad record."""
    run_example_script(TARGET)


def rich_batches():
    """Batches exercising the record options, with two invalid records among valid ones."""
    def rec(**kw):
        return pb.Record(**kw)

    yield pb.ProduceRequest(batch_id=100, topic=TOPIC, records=[
        rec(key=f"k-{i}".encode(), value=f"first {i}".encode(),
            headers=[pb.Header(key="source", value=b"python"), pb.Header(key="seq", value=str(i).encode())])
        for i in range(4)])
    yield pb.ProduceRequest(batch_id=101, topic=TOPIC, records=[
        rec(key=b"p0-a", value=b"on partition 0", partition=0, timestamp_ms=1_700_000_000_000),
        rec(key=b"p999", value=b"no such partition", partition=999),           # -> UNKNOWN_PARTITION
        rec(key=b"p0-b", value=b"also partition 0", partition=0, timestamp_ms=1_700_000_000_001,
            headers=[pb.Header(key="dup", value=b"1"), pb.Header(key="dup", value=b"2"),
                     pb.Header(key="empty", value=b"")]),
        rec(key=b"tombstone"),                                                # value unset: null
        rec(key=b"", value=b""),                                              # empty, not null
    ])
    yield pb.ProduceRequest(batch_id=102, topic=TOPIC, records=[
        rec(key=b"before-bad", value=b"ok"),
        rec(topic=BAD_TOPIC, key=b"bad-topic", value=b"never sent"),           # -> INVALID_RECORD
        rec(key=b"after-bad", value=b"ok"),
        rec(value=b"no key"),                                                  # key unset: null
    ])
    for b in range(103, 108):
        yield pb.ProduceRequest(batch_id=b, topic=TOPIC, records=[
            rec(key=f"k-{j % 7}".encode(), value=f"bulk {b}-{j}".encode(),
                headers=[pb.Header(key="batch", value=str(b).encode())])
            for j in range(20)])


def test_stream_round_trip(target=TARGET, settings=None, stamped=()):
    """Several batches on one stream: every valid record acked in order, each bad one gets its own error."""
    bad = {(101, 1): ("ERROR_CODE_UNKNOWN_PARTITION", None),
           (102, 1): ("ERROR_CODE_INVALID_RECORD", None)}
    batch_ids, acks, expected = [], [], []
    partition_of_key = {}
    for request, response in produce.produce(target, rich_batches(), **(settings or {})):
        batch_ids.append(response.batch_id)
        for i, (record, result) in enumerate(zip(request.records, response.results, strict=True)):
            where = f"batch {response.batch_id} record {i}"
            if (response.batch_id, i) in bad:
                code = bad[(response.batch_id, i)][0]
                check(result.HasField("error"), f"{where}: expected {code}, got {result}")
                check(pb.ErrorCode.Name(result.error.code) == code and not result.error.retriable,
                      f"{where}: expected {code} (not retriable), got {result.error}")
                print(f"  {where}: {code}: {result.error.message}")
                continue
            check(result.HasField("ok"), f"{where}: expected an ack, got {result.error}")
            at = result.ok
            check(at.topic == TOPIC, f"{where}: acked for topic {at.topic!r}")
            if record.HasField("partition"):
                check(at.partition == record.partition, f"{where}: asked for partition {record.partition}, got {at.partition}")
            elif record.HasField("key"):
                first = partition_of_key.setdefault(record.key, at.partition)
                check(first == at.partition, f"{where}: key {record.key!r} went to {at.partition} and to {first}")
            acks.append((at.partition, at.offset))
            expected.append(expected_record(
                TOPIC, at.partition, at.offset,
                record.key if record.HasField("key") else None,
                record.value if record.HasField("value") else None,
                [(h.key, h.value) for h in record.headers] + list(stamped),
                record.timestamp_ms if record.HasField("timestamp_ms") else None))
    check(batch_ids == list(range(100, 108)), f"responses for batches {batch_ids}")
    last = check_in_order(acks)
    print(f"  {len(acks)} acks in order over partitions {sorted(last)}, 2 per-record errors")
    check_consumed(expected)


def grpcurl(*args, stdin=None, transport=("-plaintext",)):
    """Runs grpcurl (the one installed beside this Python, else on PATH), in plaintext unless `transport` says otherwise."""
    beside = os.path.join(os.path.dirname(sys.executable), "grpcurl")
    exe = beside if os.access(beside, os.X_OK) else "grpcurl"
    done = subprocess.run([exe, *transport, *args], input=stdin, capture_output=True, text=True, timeout=60)
    check(done.returncode == 0, f"grpcurl {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def json_stream(text):
    """The JSON objects grpcurl prints one after another."""
    decoder, objects, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        obj, at = decoder.raw_decode(text, at)
        objects.append(obj)
    return objects


def test_grpcurl_via_reflection():
    """grpcurl lists and describes the API through reflection, and streams two batches with it."""
    services = grpcurl(TARGET, "list").split()
    check("kafka_gateway.v1.Producer" in services and "grpc.health.v1.Health" in services,
          f"reflection lists {services}")
    description = grpcurl(TARGET, "describe", "kafka_gateway.v1.Producer")
    check("rpc Produce ( stream .kafka_gateway.v1.ProduceRequest ) returns ( stream" in description,
          f"describe shows {description}")
    health = json.loads(grpcurl("-d", '{"service": "kafka_gateway.v1.Producer"}', TARGET,
                                "grpc.health.v1.Health/Check"))
    check(health == {"status": "SERVING"}, f"health {health}")

    def b(text):
        return base64.b64encode(text.encode()).decode()

    sent = [
        (1, [("k1", "hello", [("source", "grpcurl")]), ("k2", "world", [])]),
        (2, [("k1", "again", [("n", "1"), ("n", "2")])]),
    ]
    requests = "\n".join(json.dumps({
        "batch_id": batch_id, "topic": TOPIC,
        "records": [{"key": b(k), "value": b(v), "headers": [{"key": hk, "value": b(hv)} for hk, hv in hs]}
                    for k, v, hs in records],
    }) for batch_id, records in sent)
    responses = json_stream(grpcurl("-d", "@", TARGET, "kafka_gateway.v1.Producer/Produce", stdin=requests))
    check([int(r["batchId"]) for r in responses] == [1, 2], f"responses {responses}")
    expected, acks = [], []
    for (batch_id, records), response in zip(sent, responses, strict=True):
        for (k, v, hs), result in zip(records, response["results"], strict=True):
            check("ok" in result, f"batch {batch_id}: {result}")
            ok = result["ok"]
            partition, offset = ok.get("partition", 0), int(ok.get("offset", "0"))
            acks.append((partition, offset))
            expected.append(expected_record(TOPIC, partition, offset, k.encode(), v.encode(),
                                            [(hk, hv.encode()) for hk, hv in hs]))
    check_in_order(acks)
    print(f"  grpcurl: {len(acks)} acks in order")
    check_consumed(expected)


def tls_settings():
    """The TLS gateway's CA, the client certificate and the token, as produce.produce takes them."""
    def read(name):
        with open(env(name), "rb") as f:
            return f.read()

    return {"ca": read("KAFKA_TEST_TLS_CA"), "client_cert": read("KAFKA_TEST_TLS_CLIENT_CERT"),
            "client_key": read("KAFKA_TEST_TLS_CLIENT_KEY"), "token": env("KAFKA_TEST_TOKEN")}


def stamp():
    """The header the TLS gateway adds to every record: the token's principal."""
    return (env("KAFKA_TEST_PRINCIPAL_HEADER"), env("KAFKA_TEST_PRINCIPAL").encode())


def tls_environment(token=None):
    """This process' environment plus the variables produce.py reads for TLS and the token (default: the good one)."""
    return {
        **os.environ,
        "KAFKA_GATEWAY_CA": env("KAFKA_TEST_TLS_CA"),
        "KAFKA_GATEWAY_CLIENT_CERT": env("KAFKA_TEST_TLS_CLIENT_CERT"),
        "KAFKA_GATEWAY_CLIENT_KEY": env("KAFKA_TEST_TLS_CLIENT_KEY"),
        "KAFKA_GATEWAY_TOKEN": token or env("KAFKA_TEST_TOKEN"),
    }


def test_tls_example_script():
    """Over TLS with a client certificate and a token, from the KAFKA_GATEWAY_* variables: the same 8 acks, stamped with the token's principal."""
    run_example_script(TLS_TARGET, env=tls_environment(), stamped=[stamp()])


def test_tls_wrong_token():
    """Over TLS, a token the gateway does not know: the stream fails UNAUTHENTICATED saying why, though the client certificate alone would do (a token, when sent, wins); the script says so and exits non-zero."""
    batch = pb.ProduceRequest(batch_id=1, topic=TOPIC, records=[pb.Record(value=b"never stored")])
    try:
        list(produce.produce(TLS_TARGET, [batch], **{**tls_settings(), "token": "not-a-key-the-gateway-knows-0123456789"}))
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.UNAUTHENTICATED and "unknown API key" in e.details(),
              f"expected UNAUTHENTICATED: unknown API key, got {e.code()}: {e.details()}")
        print(f"  {e.code().name}: {e.details()}")
    else:
        raise AssertionError("a wrong token was accepted")
    run = subprocess.run([sys.executable, os.path.join(HERE, "produce.py"), TLS_TARGET, TOPIC],
                         capture_output=True, text=True, timeout=60, env=tls_environment("not-a-key-the-gateway-knows-0123456789"))
    check(run.returncode != 0 and "stream failed: UNAUTHENTICATED: unknown API key" in run.stderr,
          f"with a wrong token produce.py should fail UNAUTHENTICATED: exit {run.returncode}\n{run.stdout}{run.stderr}")
    print(f"  produce.py: {run.stderr.strip()}")


def test_tls_stream_round_trip():
    """Over TLS with produce.produce(token=..., ca=..., client_cert=..., client_key=...): the same round trip as in plaintext."""
    test_stream_round_trip(TLS_TARGET, tls_settings(), stamped=[stamp()])


def test_grpcurl_over_tls():
    """grpcurl -cacert, -cert/-key and -H 'authorization: Bearer ...' streams a batch through the TLS gateway."""
    transport = ["-cacert", env("KAFKA_TEST_TLS_CA"), "-cert", env("KAFKA_TEST_TLS_CLIENT_CERT"),
                 "-key", env("KAFKA_TEST_TLS_CLIENT_KEY"), "-H", f"authorization: Bearer {env('KAFKA_TEST_TOKEN')}"]
    address = TLS_TARGET.removeprefix("https://")
    services = grpcurl(address, "list", transport=transport).split()
    check("kafka_gateway.v1.Producer" in services, f"reflection over TLS lists {services}")
    request = json.dumps({"batch_id": 1, "topic": TOPIC, "records": [
        {"key": base64.b64encode(b"tls").decode(), "value": base64.b64encode(b"over grpcurl").decode()}]})
    responses = json_stream(grpcurl("-d", "@", address, "kafka_gateway.v1.Producer/Produce",
                                    stdin=request, transport=transport))
    check(len(responses) == 1 and "ok" in responses[0]["results"][0], f"responses {responses}")
    ok = responses[0]["results"][0]["ok"]
    partition, offset = ok.get("partition", 0), int(ok.get("offset", "0"))
    print(f"  grpcurl over TLS: acked at partition {partition} offset {offset}")
    check_consumed([expected_record(TOPIC, partition, offset, b"tls", b"over grpcurl", [stamp()])])


TLS_TESTS = [test_tls_example_script, test_tls_wrong_token, test_tls_stream_round_trip, test_grpcurl_over_tls]


def main():
    print(f"gateway {TARGET}, brokers {BOOTSTRAP}, topic {TOPIC}, TLS gateway {TLS_TARGET or '(none)'}")
    passed = failed = skipped = 0
    for test in [test_example_script, test_stream_round_trip, test_grpcurl_via_reflection, *TLS_TESTS]:
        print(f"--- {test.__name__}: {test.__doc__.strip()}")
        if test in TLS_TESTS and not TLS_TARGET:
            skipped += 1
            print(f"SKIP {test.__name__}: KAFKA_TEST_TLS_TARGET is not set (see the top of this file)")
            continue
        try:
            test()
        except Exception:  # noqa: BLE001 - report every failure, then go on
            failed += 1
            traceback.print_exc()
            print(f"FAIL {test.__name__}")
        else:
            passed += 1
            print(f"ok {test.__name__}")
    print(f"python: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
