#!/usr/bin/env node
// Stream batches of records to kafka-gateway and print one ack per record, in order.
//
//   npm ci
//   node produce.js [TARGET] [TOPIC]     # defaults: $KAFKA_GATEWAY_TARGET or 127.0.0.1:50051, orders
//
// The service definition is loaded from proto/kafka_gateway/v1/producer.proto at
// run time (@grpc/proto-loader): nothing is generated. Batch 1 carries a record
// for partition 999 on purpose: it gets its own error
// (ERROR_CODE_UNKNOWN_PARTITION) while the records around it are stored.
'use strict';

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

// Sends `batches` (ProduceRequest objects) on one Produce stream. Calls
// onResponse(request, response) for each answer, which come one per batch, in
// the order sent, with one result per record. Resolves with every
// {request, response} once the stream has ended.
function produce(target, batches, onResponse = () => {}) {
  const client = new Producer(target, grpc.credentials.createInsecure());
  const call = client.Produce();
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

// Three batches of three records; batch 1's middle record names a partition that does not exist.
function* exampleBatches(topic) {
  for (let b = 0; b < 3; b++) {
    const records = [0, 1, 2].map((i) => ({
      key: Buffer.from(`customer-${i}`),
      value: Buffer.from(`order ${b}-${i}`),
      headers: [{ key: 'source', value: Buffer.from('node') }],
    }));
    if (b === 1) records[1].partition = 999;
    yield { batch_id: b, topic, records };
  }
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
        const { topic: t, partition, offset } = result.ok;
        acked++;
        console.log(`${where}: ok ${t} partition ${partition} offset ${offset}`);
      } else {
        // Not stored. Sending the same record again can only help when retriable is true.
        const { code, message, retriable } = result.error;
        failed++;
        console.log(`${where}: error ${code} retriable=${retriable}: ${message}`);
      }
    });
  });
  console.log(`${acked} acked, ${failed} failed`);
}

module.exports = { produce, exampleBatches };

if (require.main === module) {
  main().catch((err) => {
    console.error(`stream failed: ${err.code !== undefined ? grpc.status[err.code] + ': ' : ''}${err.details || err.message}`);
    process.exit(1);
  });
}
