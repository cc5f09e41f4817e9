/*
 * The gateway places keyed records where Kafka's Java client would: 200
 * keys, no explicit partition, sent once through the gateway and once with
 * a KafkaProducer (default partitioner) to the same 6-partition topic, must
 * land on the same partition both ways, which is also murmur2(key) modulo
 * the partition count, the Java client's rule for keyed records. On a real
 * broker the topic is created with the AdminClient; the embedded broker
 * creates it when the gateway first produces to it, with 6 partitions
 * (`serve --embedded-partitions`, default 6), so the gateway sends first
 * (the KafkaProducer's metadata request would create it with 4).
 */
package dev.kafkagateway.example;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.TreeSet;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import kafka_gateway.v1.ProducerOuterClass.ProduceResponse;
import kafka_gateway.v1.ProducerOuterClass.Record;
import kafka_gateway.v1.ProducerOuterClass.RecordResult;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.utils.Utils;
import org.junit.jupiter.api.Test;

class PartitioningTest {
  static final int PARTITIONS = 6;
  static final int KEYS = 200;

  @Test
  void keyedRecordsLandWhereTheJavaClientPutsThem() throws Exception {
    String target = TestEnv.target();
    String bootstrap = TestEnv.bootstrapServers();
    String topic = "kafka-gateway-java-partitioning-" + UUID.randomUUID().toString().substring(0, 12);
    Kafka.createTopic(bootstrap, topic, PARTITIONS);

    List<byte[]> keys = new ArrayList<>();
    for (int i = 0; i < KEYS; i++) {
      keys.add(("customer-" + i + "-" + UUID.nameUUIDFromBytes(new byte[] {(byte) i})).getBytes(StandardCharsets.UTF_8));
    }

    int[] viaGateway = new int[KEYS];
    try (GatewayProducer producer = GatewayProducer.newBuilder(ConnectionSettings.plaintext(target)).build()) {
      List<CompletableFuture<ProduceResponse>> futures = new ArrayList<>();
      for (int from = 0; from < KEYS; from += 50) {
        List<Record> batch = new ArrayList<>();
        for (int i = from; i < from + 50; i++) {
          batch.add(
              Record.newBuilder()
                  .setKey(ByteString.copyFrom(keys.get(i)))
                  .setValue(ByteString.copyFromUtf8("via the gateway"))
                  .build());
        }
        futures.add(producer.send(topic, batch));
      }
      int i = 0;
      for (CompletableFuture<ProduceResponse> future : futures) {
        for (RecordResult result : future.get(60, TimeUnit.SECONDS).getResultsList()) {
          assertTrue(result.hasOk(), "key " + i + " through the gateway: " + result);
          viaGateway[i++] = result.getOk().getPartition();
        }
      }
    }
    assertEquals(
        PARTITIONS,
        Kafka.partitionCount(bootstrap, topic),
        "partitions of " + topic + " (on the embedded broker: run the gateway with --embedded-partitions 6, its default)");

    int[] viaKafka = new int[KEYS];
    Properties props = new Properties();
    props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, Kafka.broker(bootstrap).javaBootstrap());
    props.put(ProducerConfig.ACKS_CONFIG, "all");
    props.put(ProducerConfig.ENABLE_METRICS_PUSH_CONFIG, "false");
    try (KafkaProducer<byte[], byte[]> producer =
        new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer())) {
      List<Future<RecordMetadata>> sent = new ArrayList<>();
      for (byte[] key : keys) {
        sent.add(producer.send(new ProducerRecord<>(topic, key, "via KafkaProducer".getBytes(StandardCharsets.UTF_8))));
      }
      for (int i = 0; i < KEYS; i++) {
        viaKafka[i] = sent.get(i).get(60, TimeUnit.SECONDS).partition();
      }
    }

    TreeSet<Integer> used = new TreeSet<>();
    for (int i = 0; i < KEYS; i++) {
      String key = new String(keys.get(i), StandardCharsets.UTF_8);
      int murmur2 = Utils.toPositive(Utils.murmur2(keys.get(i))) % PARTITIONS;
      assertEquals(viaKafka[i], viaGateway[i], "key " + key + ": KafkaProducer chose " + viaKafka[i] + ", the gateway " + viaGateway[i]);
      assertEquals(murmur2, viaKafka[i], "key " + key + ": murmur2 says " + murmur2);
      used.add(viaGateway[i]);
    }
    assertEquals(PARTITIONS, used.size(), "200 keys spread over every partition: " + used);
    System.out.printf("%d keys on %s: same partition through the gateway and KafkaProducer, partitions %s%n", KEYS, topic, used);
  }
}
