// End-to-end test of the Node example against a running gateway.
//
//   KAFKA_GATEWAY_TARGET=127.0.0.1:50051 KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 node --test test.js
//
// Acks are checked here; the acknowledged records are then read back from
// KAFKA_BOOTSTRAP_SERVERS by ../python/verify_consumed.py, run with
// $KAFKA_VERIFY_PYTHON (default python3, which needs confluent-kafka:
// pip install -r ../python/requirements.txt). KAFKA_TEST_TOPIC names an existing
// topic to use; otherwise each run makes up a new topic name.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
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

test('node produce.js TARGET TOPIC: 8 acks in order, one error for exactly the bad record', () => {
  const out = execFileSync(process.execPath, [path.join(__dirname, 'produce.js'), TARGET, TOPIC], {
    encoding: 'utf8', timeout: 60_000,
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
        headers: [{ key: 'source', value: Buffer.from('node') }],
      }));
    }
  }
  assertInOrder(acks);
  assertConsumed(expected);
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

test('several batches on one stream: valid records acked in order, each bad one gets its own error', async () => {
  const bad = new Map([['101/1', 'ERROR_CODE_UNKNOWN_PARTITION'], ['102/1', 'ERROR_CODE_INVALID_RECORD']]);
  const acks = [];
  const expected = [];
  const partitionOfKey = new Map();
  const answered = await produce(TARGET, richBatches());
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
      expected.push(expectedRecord(partition, offset, record));
    });
  }
  const last = assertInOrder(acks);
  console.log(`${acks.length} acks in order over partitions ${[...last.keys()].sort()}, 2 per-record errors`);
  assertConsumed(expected);
});
