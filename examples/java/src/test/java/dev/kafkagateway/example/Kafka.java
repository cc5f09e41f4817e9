/*
 * The tests' view of Kafka through its own Java clients: creating topics
 * with the AdminClient and reading acknowledged records back with a
 * KafkaConsumer (by assignment, no consumer group), compared field by field
 * with what was sent.
 *
 * The gateway's embedded broker (librdkafka's mock cluster) is told apart
 * by its ApiVersions answer: it has no CreateTopics. The Java clients reach
 * it through EmbeddedBrokerShim (see there why), and createTopic leaves the
 * topic to it: it creates a topic when the gateway first produces to it,
 * with the gateway's --embedded-partitions (6 by default).
 */
package dev.kafkagateway.example;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.DataInputStream;
import java.io.IOException;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

final class Kafka {
  /** How long a read-back may take: the records are already stored, so only a slow broker needs it. */
  static final Duration READ_TIMEOUT = Duration.ofSeconds(30);

  private Kafka() {}

  /** What a record was sent as, and where its ack says it is. A null key or value is a null. */
  record Expected(
      String topic,
      int partition,
      long offset,
      byte[] key,
      byte[] value,
      List<Map.Entry<String, byte[]>> headers,
      Long timestampMs) {
    String where() {
      return topic + "/" + partition + "@" + offset;
    }
  }

  static final short CREATE_TOPICS = 19;

  /** What a bootstrap address turned out to be, by address. */
  private static final Map<String, Broker> brokers = new HashMap<>();

  /** The broker behind a bootstrap address, and the address the Java clients use for it. */
  record Broker(boolean embedded, String javaBootstrap) {}

  /**
   * Asks the first broker of {@code bootstrap} for its API versions (ApiVersions v0, which every
   * broker answers): without CreateTopics it is the gateway's embedded broker, which the Java
   * clients reach through an EmbeddedBrokerShim.
   */
  static synchronized Broker broker(String bootstrap) {
    Broker known = brokers.get(bootstrap);
    if (known != null) {
      return known;
    }
    String first = bootstrap.split(",")[0].trim();
    String host = first.substring(0, first.lastIndexOf(':'));
    int port = Integer.parseInt(first.substring(first.lastIndexOf(':') + 1));
    Map<Short, Short> maxVersions = new HashMap<>();
    try (Socket socket = new Socket(host, port)) {
      socket.setSoTimeout(10_000);
      byte[] clientId = "kafka-gateway-java-test".getBytes(StandardCharsets.UTF_8);
      ByteBuffer request = ByteBuffer.allocate(4 + 10 + clientId.length);
      request.putInt(10 + clientId.length).putShort(EmbeddedBrokerShim.API_VERSIONS).putShort((short) 0);
      request.putInt(1).putShort((short) clientId.length).put(clientId);
      socket.getOutputStream().write(request.array());
      DataInputStream in = new DataInputStream(socket.getInputStream());
      byte[] frame = new byte[in.readInt()];
      in.readFully(frame);
      ByteBuffer response = ByteBuffer.wrap(frame);
      response.getInt(); // correlation id
      short error = response.getShort();
      assertEquals(0, error, "ApiVersions v0 to " + first + " failed with error code " + error);
      for (int n = response.getInt(); n > 0; n--) {
        short key = response.getShort();
        response.getShort(); // min
        maxVersions.put(key, response.getShort());
      }
    } catch (IOException e) {
      throw new AssertionError("cannot reach the Kafka broker at " + first + " (KAFKA_BOOTSTRAP_SERVERS): " + e, e);
    }
    Broker broker;
    if (maxVersions.containsKey(CREATE_TOPICS)) {
      broker = new Broker(false, bootstrap);
    } else {
      EmbeddedBrokerShim relay =
          EmbeddedBrokerShim.to(host, port, maxVersions.get(EmbeddedBrokerShim.API_VERSIONS));
      broker = new Broker(true, relay.address());
      System.out.printf(
          "%s is the gateway's embedded broker (no CreateTopics): the Java clients reach it through"
              + " a relay at %s (see EmbeddedBrokerShim)%n",
          bootstrap, relay.address());
    }
    brokers.put(bootstrap, broker);
    return broker;
  }

  /**
   * Creates {@code topic} with {@code partitions} partitions. Returns false on the embedded broker,
   * which creates it on first use.
   */
  static boolean createTopic(String bootstrap, String topic, int partitions) {
    if (broker(bootstrap).embedded()) {
      System.out.printf("%s is created by the embedded broker when the gateway first produces to it%n", topic);
      return false;
    }
    Properties props = new Properties();
    props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
    try (Admin admin = Admin.create(props)) {
      admin
          .createTopics(List.of(new NewTopic(topic, Optional.of(partitions), Optional.empty())))
          .all()
          .get(60, TimeUnit.SECONDS);
      System.out.printf(
          "created topic %s (%d partitions, the broker's default replication) with the AdminClient%n",
          topic, partitions);
      return true;
    } catch (ExecutionException e) {
      if (e.getCause() instanceof TopicExistsException) {
        fail("topic " + topic + " exists already: a fresh name was expected");
      }
      throw new AssertionError("creating topic " + topic + " on " + bootstrap + " failed: " + e.getCause(), e);
    } catch (TimeoutException e) {
      throw new AssertionError("creating topic " + topic + " on " + bootstrap + " took over 60 s", e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new AssertionError("interrupted while creating topic " + topic, e);
    }
  }

  /** The partition count Kafka reports for {@code topic}. */
  static int partitionCount(String bootstrap, String topic) {
    try (KafkaConsumer<byte[], byte[]> consumer = consumer(bootstrap)) {
      List<PartitionInfo> partitions = consumer.partitionsFor(topic, READ_TIMEOUT);
      return partitions.size();
    }
  }

  /**
   * Reads every partition in {@code expected} from its lowest expected offset to its highest, and
   * checks that each expected record is there as sent (key, value, headers in order, create time
   * when given) and that nothing else lies in between.
   */
  static void assertStored(String bootstrap, List<Expected> expected) {
    Map<TopicPartition, long[]> ranges = new HashMap<>();
    Map<TopicPartition, Map<Long, Expected>> byOffset = new HashMap<>();
    for (Expected e : expected) {
      TopicPartition tp = new TopicPartition(e.topic(), e.partition());
      ranges.merge(tp, new long[] {e.offset(), e.offset()}, (a, b) -> new long[] {Math.min(a[0], b[0]), Math.max(a[1], b[1])});
      Expected twice = byOffset.computeIfAbsent(tp, k -> new TreeMap<>()).put(e.offset(), e);
      assertTrue(twice == null, "two records acked at " + e.where());
    }
    Map<TopicPartition, Map<Long, ConsumerRecord<byte[], byte[]>>> found = new HashMap<>();
    try (KafkaConsumer<byte[], byte[]> consumer = consumer(bootstrap)) {
      consumer.assign(ranges.keySet());
      ranges.forEach((tp, range) -> consumer.seek(tp, range[0]));
      long deadline = System.nanoTime() + READ_TIMEOUT.toNanos();
      List<TopicPartition> open = new ArrayList<>(ranges.keySet());
      while (!open.isEmpty() && System.nanoTime() < deadline) {
        for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
          TopicPartition tp = new TopicPartition(r.topic(), r.partition());
          if (r.offset() <= ranges.get(tp)[1]) {
            found.computeIfAbsent(tp, k -> new TreeMap<>()).put(r.offset(), r);
          }
        }
        open.removeIf(tp -> consumer.position(tp) > ranges.get(tp)[1]);
      }
      assertTrue(open.isEmpty(), "read back nothing up to the last acked offset within " + READ_TIMEOUT + " on " + open);
    }
    for (var entry : ranges.entrySet()) {
      TopicPartition tp = entry.getKey();
      long[] range = entry.getValue();
      Map<Long, ConsumerRecord<byte[], byte[]>> stored = found.getOrDefault(tp, Map.of());
      for (long offset = range[0]; offset <= range[1]; offset++) {
        Expected e = byOffset.get(tp).get(offset);
        ConsumerRecord<byte[], byte[]> r = stored.get(offset);
        if (e == null) {
          long at = offset;
          assertTrue(r == null, () -> "an unexpected record at " + tp + "@" + at + " between acked ones (a duplicate?): key " + text(r.key()));
          continue;
        }
        assertTrue(r != null, "nothing stored at " + e.where() + ", which was acked");
        assertArrayEquals(e.key(), r.key(), () -> "key at " + e.where());
        assertArrayEquals(e.value(), r.value(), () -> "value at " + e.where());
        assertEquals(describe(e.headers()), describe(r.headers()), () -> "headers (in order) at " + e.where());
        if (e.timestampMs() != null) {
          assertEquals(e.timestampMs(), r.timestamp(), () -> "create time at " + e.where());
        }
      }
    }
    System.out.printf("read back %d records with the Kafka consumer: keys, values, headers, partitions and offsets match%n", expected.size());
  }

  static KafkaConsumer<byte[], byte[]> consumer(String bootstrap) {
    Properties props = new Properties();
    props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, broker(bootstrap).javaBootstrap());
    props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
    props.put(ConsumerConfig.ENABLE_METRICS_PUSH_CONFIG, "false");
    return new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer());
  }

  /** Headers as comparable text: "key=value" in order, values as UTF-8 (the tests send text). */
  private static List<String> describe(List<Map.Entry<String, byte[]>> headers) {
    List<String> out = new ArrayList<>();
    for (var h : headers) {
      out.add(h.getKey() + "=" + text(h.getValue()));
    }
    return out;
  }

  private static List<String> describe(Iterable<Header> headers) {
    List<String> out = new ArrayList<>();
    for (Header h : headers) {
      out.add(h.key() + "=" + text(h.value()));
    }
    return out;
  }

  static String text(byte[] bytes) {
    return bytes == null ? "(null)" : new String(bytes, StandardCharsets.UTF_8);
  }
}
