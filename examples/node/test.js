// End-to-end test of the Node example against a running gateway.
//
//   KAFKA_GATEWAY_TARGET=127.0.0.1:50051 KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 node --test test.js
//
// Acks are checked here; the acknowledged records are then read back from
// KAFKA_BOOTSTRAP_SERVERS by ../python/verify_consumed.py, run with
// $KAFKA_VERIFY_PYTHON (default python3, which needs confluent-kafka:
// pip install -r ../python/requirements.txt). KAFKA_TEST_TOPIC names an existing
// topic to use; otherwise each run makes up a new topic name.
//
// The TLS tests need a second gateway producing to the same brokers, serving
// TLS, requiring a client certificate (--tls-client-ca) and an API key
// (--api-keys), and stamping the principal into a header (--principal-header);
// .ci/clients.sh starts one. They are skipped, and say so, unless
// KAFKA_TEST_TLS_TARGET (its https://HOST:PORT), KAFKA_TEST_TLS_CA,
// KAFKA_TEST_TLS_CLIENT_CERT, KAFKA_TEST_TLS_CLIENT_KEY, KAFKA_TEST_TOKEN (an
// API key), KAFKA_TEST_PRINCIPAL (its principal) and KAFKA_TEST_PRINCIPAL_HEADER
// are set.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const { produce } = require('./produce');

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} must be set (see the top of test.js)`);
  return value;
}

const TARGET = env('KAFKA_GATEWAY_TARGET');
env('KAFKA_BOOTSTRAP_SERVERS'); // read by the verifier
const TOPIC = process.env.KAFKA_TEST_TOPIC || `kafka-gateway-node-${crypto.randomBytes(6).toString('hex')}`;
const VERIFIER = path.resolve(__dirname, '..', 'python', 'verify_consumed.py');
const TLS_TARGET = process.env.KAFKA_TEST_TLS_TARGET;
const SKIP_TLS = TLS_TARGET ? false : 'KAFKA_TEST_TLS_TARGET is not set (see the top of test.js)';

const b64 = (buf) => (buf === undefined || buf === null ? null : Buffer.from(buf).toString('base64'));

function expectedRecord(partition, offset, { key, value, headers = [], timestamp_ms }) {
  const entry = {
    topic: TOPIC, partition, offset: Number(offset),
    key: b64(key), value: b64(value),
    headers: headers.map((h) => ({ key: h.key, value: b64(h.value) })),
  };
  if (timestamp_ms !== undefined) entry.timestamp_ms = Number(timestamp_ms);
  return entry;
}

// acks: [partition, offset] in send order; offsets must grow within each partition.
function assertInOrder(acks) {
  const last = new Map();
  for (const [partition, offset] of acks) {
    const o = BigInt(offset);
    if (last.has(partition)) {
      assert.ok(o > last.get(partition), `partition ${partition}: offset ${o} acked after ${last.get(partition)}`);
    }
    last.set(partition, o);
  }
  return last;
}

// Reads the records back from Kafka (python verify_consumed.py) and compares.
function assertConsumed(expected) {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kgw-node-')), 'expected.json');
  fs.writeFileSync(file, JSON.stringify(expected, null, 1));
  const python = process.env.KAFKA_VERIFY_PYTHON || 'python3';
  const run = spawnSync(python, [VERIFIER, file], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(run.status, 0, `${python} ${VERIFIER} ${file} failed (${run.error || 'exit ' + run.status}):\n${run.stdout}${run.stderr}`);
  console.log(run.stdout.trim());
}

// Runs produce.js TARGET TOPIC with `env` and checks its output and the
// records stored; `stamped` are the headers the gateway adds after the
// record's own.
function runExampleScript(target, env = process.env, stamped = []) {
  const out = execFileSync(process.execPath, [path.join(__dirname, 'produce.js'), target, TOPIC], {
    encoding: 'utf8', timeout: 60_000, env,
  });
  console.log(out.trim());
  const lines = out.trim().split('\n');
  assert.equal(lines.length, 10);
  assert.equal(lines[9], '8 acked, 1 failed');
  const acks = [];
  const expected = [];
  let n = 0;
  for (let b = 0; b < 3; b++) {
    for (let i = 0; i < 3; i++, n++) {
      const prefix = `batch ${b} record ${i}: `;
      const line = lines[n];
      assert.ok(line.startsWith(prefix), `line ${JSON.stringify(line)} should start with ${prefix} (out of order?)`);
      if (b === 1 && i === 1) {
        assert.ok(line.startsWith(`${prefix}error ERROR_CODE_UNKNOWN_PARTITION retriable=false: `), line);
        continue;
      }
      const m = line.slice(prefix.length).match(/^ok (\S+) partition (\d+) offset (\d+)$/);
      assert.ok(m, `expected an ack: ${line}`);
      assert.equal(m[1], TOPIC);
      acks.push([Number(m[2]), m[3]]);
      expected.push(expectedRecord(Number(m[2]), m[3], {
        key: Buffer.from(`customer-${i}`), value: Buffer.from(`order ${b}-${i}`),
        headers: [{ key: 'source', value: Buffer.from('node') }, ...stamped],
      }));
    }
  }
  assertInOrder(acks);
  assertConsumed(expected);
}

test('node produce.js TARGET TOPIC: 8 acks in order, one error for exactly the bad record', () => {
  runExampleScript(TARGET);
});

function* richBatches() {
  const B = Buffer.from;
  yield {
    batch_id: 100, topic: TOPIC,
    records: [0, 1, 2, 3].map((i) => ({
      key: B(`k-${i}`), value: B(`first ${i}`),
      headers: [{ key: 'source', value: B('node') }, { key: 'seq', value: B(String(i)) }],
    })),
  };
  yield {
    batch_id: 101, topic: TOPIC,
    records: [
      { key: B('p0-a'), value: B('on partition 0'), partition: 0, timestamp_ms: '1700000000000' },
      { key: B('p999'), value: B('no such partition'), partition: 999 }, // -> UNKNOWN_PARTITION
      {
        key: B('p0-b'), value: B('also partition 0'), partition: 0, timestamp_ms: '1700000000001',
        headers: [{ key: 'dup', value: B('1') }, { key: 'dup', value: B('2') }, { key: 'empty', value: B('') }],
      },
      { key: B('tombstone') }, // value unset: null
      { key: Buffer.alloc(0), value: Buffer.alloc(0) }, // empty, not null
    ],
  };
  yield {
    batch_id: 102, topic: TOPIC,
    records: [
      { key: B('before-bad'), value: B('ok') },
      { topic: 'not a valid topic!', key: B('bad-topic'), value: B('never sent') }, // -> INVALID_RECORD
      { key: B('after-bad'), value: B('ok') },
      { value: B('no key') }, // key unset: null
    ],
  };
  for (let b = 103; b < 108; b++) {
    yield {
      batch_id: b, topic: TOPIC,
      records: Array.from({ length: 20 }, (_, j) => ({
        key: B(`k-${j % 7}`), value: B(`bulk ${b}-${j}`), headers: [{ key: 'batch', value: B(String(b)) }],
      })),
    };
  }
}

// Several batches on one stream through `target` with produce()'s `settings`;
// `stamped` as for runExampleScript.
async function roundTrip(target, settings = {}, stamped = []) {
  const bad = new Map([['101/1', 'ERROR_CODE_UNKNOWN_PARTITION'], ['102/1', 'ERROR_CODE_INVALID_RECORD']]);
  const acks = [];
  const expected = [];
  const partitionOfKey = new Map();
  const answered = await produce(target, richBatches(), undefined, settings);
  assert.deepEqual(answered.map(({ response }) => response.batch_id), ['100', '101', '102', '103', '104', '105', '106', '107']);
  for (const { request, response } of answered) {
    request.records.forEach((record, i) => {
      const result = response.results[i];
      const where = `batch ${response.batch_id} record ${i}`;
      const code = bad.get(`${response.batch_id}/${i}`);
      if (code) {
        assert.equal(result.result, 'error', `${where}: expected ${code}, got ${JSON.stringify(result)}`);
        assert.equal(result.error.code, code, where);
        assert.equal(result.error.retriable, false, where);
        console.log(`${where}: ${code}: ${result.error.message}`);
        return;
      }
      assert.equal(result.result, 'ok', `${where}: expected an ack, got ${JSON.stringify(result.error)}`);
      const { topic, partition, offset } = result.ok;
      assert.equal(topic, TOPIC, where);
      if (record.partition !== undefined) {
        assert.equal(partition, record.partition, `${where}: asked for partition ${record.partition}`);
      } else if (record.key !== undefined) {
        const k = record.key.toString('hex');
        if (!partitionOfKey.has(k)) partitionOfKey.set(k, partition);
        assert.equal(partition, partitionOfKey.get(k), `${where}: one key, two partitions`);
      }
      acks.push([partition, offset]);
      expected.push(expectedRecord(partition, offset, { ...record, headers: [...(record.headers || []), ...stamped] }));
    });
  }
  const last = assertInOrder(acks);
  console.log(`${acks.length} acks in order over partitions ${[...last.keys()].sort()}, 2 per-record errors`);
  assertConsumed(expected);
}

test('several batches on one stream: valid records acked in order, each bad one gets its own error', async () => {
  await roundTrip(TARGET);
});

// The TLS gateway's CA, the client certificate and the token, as produce() takes them.
function tlsSettings() {
  return {
    ca: fs.readFileSync(env('KAFKA_TEST_TLS_CA')),
    clientCert: fs.readFileSync(env('KAFKA_TEST_TLS_CLIENT_CERT')),
    clientKey: fs.readFileSync(env('KAFKA_TEST_TLS_CLIENT_KEY')),
    token: env('KAFKA_TEST_TOKEN'),
  };
}

// The header the TLS gateway adds to every record: the token's principal.
function stamp() {
  return { key: env('KAFKA_TEST_PRINCIPAL_HEADER'), value: Buffer.from(env('KAFKA_TEST_PRINCIPAL')) };
}

// This process' environment plus the variables produce.js reads for TLS and
// the token (default: the good one).
function tlsEnvironment(token = env('KAFKA_TEST_TOKEN')) {
  return {
    ...process.env,
    KAFKA_GATEWAY_CA: env('KAFKA_TEST_TLS_CA'),
    KAFKA_GATEWAY_CLIENT_CERT: env('KAFKA_TEST_TLS_CLIENT_CERT'),
    KAFKA_GATEWAY_CLIENT_KEY: env('KAFKA_TEST_TLS_CLIENT_KEY'),
    KAFKA_GATEWAY_TOKEN: token,
  };
}

test('over TLS with a client certificate and a token from the KAFKA_GATEWAY_* variables: the same 8 acks, stamped with the principal', { skip: SKIP_TLS }, () => {
  runExampleScript(TLS_TARGET, tlsEnvironment(), [stamp()]);
});

test('over TLS, produce() with token, ca, clientCert and clientKey: the same round trip as in plaintext', { skip: SKIP_TLS }, async () => {
  await roundTrip(TLS_TARGET, tlsSettings(), [stamp()]);
});

// The client certificate alone would do, but a token, when sent, wins.
test('over TLS, a token the gateway does not know fails UNAUTHENTICATED saying why, in produce() and in produce.js', { skip: SKIP_TLS }, async () => {
  const batches = [{ batch_id: 1, topic: TOPIC, records: [{ value: Buffer.from('never stored') }] }];
  await assert.rejects(produce(TLS_TARGET, batches, undefined, { ...tlsSettings(), token: 'not-a-key-the-gateway-knows-0123456789' }), (err) => {
    assert.equal(err.code, grpc.status.UNAUTHENTICATED, `${err.code}: ${err.details}`);
    assert.match(err.details, /unknown API key/);
    console.log(`UNAUTHENTICATED: ${err.details}`);
    return true;
  });
  const run = spawnSync(process.execPath, [path.join(__dirname, 'produce.js'), TLS_TARGET, TOPIC], {
    encoding: 'utf8', timeout: 60_000, env: tlsEnvironment('not-a-key-the-gateway-knows-0123456789'),
  });
  assert.notEqual(run.status, 0, run.stdout);
  assert.match(run.stderr, /stream failed: UNAUTHENTICATED: unknown API key/);
  console.log(`produce.js: ${run.stderr.trim()}`);
});
