#!/usr/bin/env node
// Stream batches of records to kafka-gateway and print one ack per record, in order.
//
//   npm ci
//   node produce.js [TARGET] [TOPIC]     # defaults: $KAFKA_GATEWAY_TARGET or 127.0.0.1:50051, orders
//
// TARGET is HOST:PORT or http://HOST:PORT for plain HTTP/2, https://HOST:PORT
// for TLS. A gateway serving TLS or asking for credentials takes the variables
// `kafka-gateway produce` reads, all optional:
//
//   KAFKA_GATEWAY_CA               CA certificates (PEM) that verify the gateway; default: Node's roots
//   KAFKA_GATEWAY_CLIENT_CERT      a client certificate (PEM) and
//   KAFKA_GATEWAY_CLIENT_KEY       its key, for a gateway started with --tls-client-ca
//   KAFKA_GATEWAY_TLS_SERVER_NAME  verify the gateway's certificate for this name, not TARGET's host
//   KAFKA_GATEWAY_TOKEN            sent as `authorization: Bearer <token>` (an API key or a JWT)
//
//   KAFKA_GATEWAY_CA=ca.pem KAFKA_GATEWAY_TOKEN="$(cat token)" node produce.js https://gateway:50051 orders
//
// The service definition is loaded from proto/kafka_gateway/v1/producer.proto at
// run time (@grpc/proto-loader): nothing is generated. Batch 1 carries a record
// for partition 999 on purpose: it gets its own error
// (ERROR_CODE_UNKNOWN_PARTITION) while the records around it are stored. The
// batches ask for compact acks: an ack of a record stored in the batch's topic
// leaves its topic empty, and the response names it once (see ackedTopic).
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { once } = require('node:events');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const definition = protoLoader.loadSync('kafka_gateway/v1/producer.proto', {
  includeDirs: [PROTO_ROOT],
  keepCase: true, // batch_id, timestamp_ms: the names in the .proto
  longs: String, // uint64/int64 (batch_id, offset, timestamp_ms) arrive as decimal strings
  enums: String, // error codes arrive as their names
  defaults: true, // partition 0 and offset 0 are present, not missing
  oneofs: true, // result.result names the branch that is set: 'ok' or 'error'
});
const { Producer } = grpc.loadPackageDefinition(definition).kafka_gateway.v1;

// A client for `target`: HOST:PORT or http://HOST:PORT in plaintext,
// https://HOST:PORT over TLS. Over TLS the gateway's certificate is verified
// against `ca` (PEM Buffer; unset: Node's roots) for the target's host, or for
// `serverName`; `clientCert` and `clientKey` (PEM Buffers) answer a gateway
// that requires client certificates.
function connect(target, { ca, clientCert, clientKey, serverName } = {}) {
  if (!clientCert !== !clientKey) throw new Error('a client certificate needs its key: give both, or neither');
  if (target.startsWith('https://')) {
    const credentials = grpc.credentials.createSsl(ca || null, clientKey || null, clientCert || null);
    const options = serverName
      ? { 'grpc.ssl_target_name_override': serverName, 'grpc.default_authority': serverName }
      : {};
    return new Producer(target.slice('https://'.length), credentials, options);
  }
  if (ca || clientCert || serverName) throw new Error(`TLS settings need an https:// target, not ${target}`);
  return new Producer(target.replace(/^http:\/\//, ''), grpc.credentials.createInsecure());
}

// Sends `batches` (ProduceRequest objects) on one Produce stream. Calls
// onResponse(request, response) for each answer, which come one per batch, in
// the order sent, with one result per record. Resolves with every
// {request, response} once the stream has ended. `settings.token` goes as
// `authorization: Bearer <token>` (over plain http:// it travels in the
// clear); the other settings are connect()'s.
function produce(target, batches, onResponse = () => {}, { token, ...tls } = {}) {
  const client = connect(target, tls);
  const metadata = new grpc.Metadata();
  if (token) metadata.set('authorization', `Bearer ${token}`);
  const call = client.Produce(metadata);
  const sent = [];
  const answered = [];
  return new Promise((resolve, reject) => {
    call.on('data', (response) => {
      const request = sent[answered.length];
      if (!request || response.batch_id !== String(request.batch_id) ||
          response.results.length !== request.records.length) {
        call.cancel();
        reject(new Error(`response to batch ${response.batch_id} does not match the batch sent`));
        return;
      }
      answered.push({ request, response });
      onResponse(request, response);
    });
    call.on('error', reject); // the stream broke: batches after the last answered one are unknown
    call.on('end', () => {
      if (answered.length !== sent.length) {
        reject(new Error(`${sent.length} batches sent, ${answered.length} answered`));
      } else {
        resolve(answered);
      }
    });
    (async () => {
      for (const batch of batches) {
        sent.push(batch);
        // false: HTTP/2 flow control is holding us back; wait until the gateway reads on.
        if (!call.write(batch)) await once(call, 'drain');
      }
      call.end();
    })().catch(reject);
  }).finally(() => client.close());
}

// The topic an ack names: its own, or, in a compact ack (empty), the response's.
function ackedTopic(response, ok) {
  return ok.topic || response.topic;
}

// Three batches of three records; batch 1's middle record names a partition
// that does not exist. compact_acks: each ack of a record stored in `topic`
// leaves its topic empty and the response names the topic once: less to
// encode and decode per record.
function* exampleBatches(topic) {
  for (let b = 0; b < 3; b++) {
    const records = [0, 1, 2].map((i) => ({
      key: Buffer.from(`customer-${i}`),
      value: Buffer.from(`order ${b}-${i}`),
      headers: [{ key: 'source', value: Buffer.from('node') }],
    }));
    if (b === 1) records[1].partition = 999;
    yield { batch_id: b, topic, records, compact_acks: true };
  }
}

// produce()'s TLS files and token, from the variables at the top of this file.
function settingsFromEnv(env = process.env) {
  const read = (name) => (env[name] ? fs.readFileSync(env[name]) : undefined);
  return {
    ca: read('KAFKA_GATEWAY_CA'),
    clientCert: read('KAFKA_GATEWAY_CLIENT_CERT'),
    clientKey: read('KAFKA_GATEWAY_CLIENT_KEY'),
    serverName: env.KAFKA_GATEWAY_TLS_SERVER_NAME || undefined,
    token: env.KAFKA_GATEWAY_TOKEN || undefined,
  };
}

async function main() {
  const target = process.argv[2] || process.env.KAFKA_GATEWAY_TARGET || '127.0.0.1:50051';
  const topic = process.argv[3] || 'orders';
  let acked = 0;
  let failed = 0;
  await produce(target, exampleBatches(topic), (request, response) => {
    response.results.forEach((result, i) => {
      const where = `batch ${response.batch_id} record ${i}`;
      if (result.result === 'ok') {
        const { partition, offset } = result.ok;
        acked++;
        console.log(`${where}: ok ${ackedTopic(response, result.ok)} partition ${partition} offset ${offset}`);
      } else {
        // Not stored, unless may_be_stored (it failed in flight). Sending the
        // same record again can only help when retriable is true.
        const { code, message, retriable } = result.error;
        failed++;
        console.log(`${where}: error ${code} retriable=${retriable}: ${message}`);
      }
    });
  }, settingsFromEnv());
  console.log(`${acked} acked, ${failed} failed`);
}

module.exports = { produce, connect, ackedTopic, exampleBatches, settingsFromEnv };

if (require.main === module) {
  main().catch((err) => {
    // UNAUTHENTICATED: the gateway says what is wrong with the token (or the client certificate).
    console.error(`stream failed: ${err.code !== undefined ? grpc.status[err.code] + ': ' : ''}${err.details || err.message}`);
    process.exit(1);
  });
}
