/*
 * End to end through a running gateway: GatewayProducer streams batches
 * exercising every record option (keys, null keys, null and empty values,
 * headers with duplicate keys, an explicit partition, a create time, compact
 * acks, a record to an invalid topic name), the acks are checked (one per
 * record, in batch order, offsets growing per partition) and the records are
 * read back with Kafka's Java consumer and compared with what was sent. The
 * same over TLS with a client certificate and an API key, where the gateway
 * stamps the key's principal into a header; and the command-line example.
 * See TestEnv for the variables; .ci/java-client.sh sets them.
 */
package dev.kafkagateway.example;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.io.StringReader;
import java.nio.charset.StandardCharsets;
import java.util.AbstractMap.SimpleImmutableEntry;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import kafka_gateway.v1.ProducerOuterClass.ErrorCode;
import kafka_gateway.v1.ProducerOuterClass.Header;
import kafka_gateway.v1.ProducerOuterClass.ProduceRequest;
import kafka_gateway.v1.ProducerOuterClass.ProduceResponse;
import kafka_gateway.v1.ProducerOuterClass.Record;
import kafka_gateway.v1.ProducerOuterClass.RecordMetadata;
import kafka_gateway.v1.ProducerOuterClass.RecordResult;
import org.junit.jupiter.api.Test;

class GatewayRoundTripTest {
  /** A name Kafka refuses (spaces, '!'): the gateway must fail that record alone. */
  static final String BAD_TOPIC = "not a valid topic!";

  private static String chosenTopic;

  /**
   * The topic of every test here: KAFKA_TEST_TOPIC, or one created on first use (3 partitions).
   * Chosen in the first test, not in a @BeforeAll, so that a missing variable fails or aborts each
   * test, as TestEnv says, rather than the class.
   */
  static synchronized String topic() {
    if (chosenTopic == null) {
      String given = TestEnv.givenTopic();
      if (given != null) {
        chosenTopic = given;
      } else {
        String fresh = "kafka-gateway-java-" + UUID.randomUUID().toString().substring(0, 12);
        Kafka.createTopic(TestEnv.bootstrapServers(), fresh, 3);
        chosenTopic = fresh;
      }
    }
    return chosenTopic;
  }

  @Test
  void streamsBatchesInOrderAndKafkaStoresThemAsSent() throws Exception {
    roundTrip(ConnectionSettings.plaintext(TestEnv.target()), List.of());
  }

  @Test
  void overTlsWithClientCertificateAndTokenTheGatewayStampsThePrincipal() throws Exception {
    TestEnv.Tls tls = TestEnv.tls();
    roundTrip(
        tls.settings(),
        List.of(entry(tls.principalHeader(), tls.principal())));
  }

  @Test
  void overTlsAnUnknownTokenFailsTheBatchUnauthenticatedWithoutRetrying() throws Exception {
    TestEnv.Tls tls = TestEnv.tls();
    try (GatewayProducer producer =
        GatewayProducer.newBuilder(tls.settings().withToken("not-a-key-the-gateway-knows-0123456789")).build()) {
      CompletableFuture<ProduceResponse> response =
          producer.send(topic(), List.of(record("never", "stored")));
      ExecutionException e = assertThrows(ExecutionException.class, () -> response.get(30, TimeUnit.SECONDS));
      StatusRuntimeException status = assertInstanceOf(StatusRuntimeException.class, e.getCause());
      assertEquals(Status.Code.UNAUTHENTICATED, status.getStatus().getCode(), status.toString());
      assertTrue(
          String.valueOf(status.getStatus().getDescription()).contains("unknown API key"),
          "the gateway should say why: " + status);
      assertEquals(1, producer.streamsOpened(), "UNAUTHENTICATED is not worth a new stream");
      System.out.println("unknown token: " + status.getStatus());
    }
  }

  @Test
  void theCommandLineExamplePrintsOneAckPerLineInOrder() throws Exception {
    String target = TestEnv.target();
    List<String[]> lines = new ArrayList<>();
    StringBuilder input = new StringBuilder();
    for (int i = 0; i < 12; i++) {
      String key = i % 4 == 3 ? null : "line-key-" + (i % 3);
      String value = "line " + i + " ünïcode";
      lines.add(new String[] {key, value});
      input.append(key == null ? "" : key + "\t").append(value).append('\n');
    }
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int status =
        ProduceLines.run(
            ConnectionSettings.plaintext(target),
            topic(),
            new BufferedReader(new StringReader(input.toString())),
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8));
    String printed = out.toString(StandardCharsets.UTF_8);
    System.out.print(printed);
    assertEquals(0, status, "exit status; stderr: " + err.toString(StandardCharsets.UTF_8));
    String[] acks = printed.split("\n");
    assertEquals(lines.size(), acks.length, "one line per record:\n" + printed);
    Pattern ack = Pattern.compile(Pattern.quote(topic()) + "/(\\d+)@(\\d+)");
    List<Kafka.Expected> expected = new ArrayList<>();
    Map<Integer, Long> last = new HashMap<>();
    for (int i = 0; i < acks.length; i++) {
      Matcher m = ack.matcher(acks[i]);
      assertTrue(m.matches(), "line " + i + ": expected TOPIC/PARTITION@OFFSET, got " + acks[i]);
      int partition = Integer.parseInt(m.group(1));
      long offset = Long.parseLong(m.group(2));
      Long before = last.put(partition, offset);
      assertTrue(before == null || offset > before, "offsets must grow in partition " + partition);
      String[] line = lines.get(i);
      expected.add(
          new Kafka.Expected(topic(), partition, offset, bytes(line[0]), bytes(line[1]), List.of(), null));
    }
    Kafka.assertStored(TestEnv.bootstrapServers(), expected);
  }

  /** A batch to send, and which of its records must fail with which code. */
  record Batch(ProduceRequest request, Map<Integer, ErrorCode> failures) {}

  static List<Batch> richBatches() {
    List<Batch> batches = new ArrayList<>();
    List<Record> first = new ArrayList<>();
    for (int i = 0; i < 4; i++) {
      first.add(
          record("k-" + i, "first " + i).toBuilder()
              .addHeaders(header("source", "java"))
              .addHeaders(header("seq", String.valueOf(i)))
              .build());
    }
    batches.add(new Batch(request(100, first, false), Map.of()));
    batches.add(
        new Batch(
            request(
                101,
                List.of(
                    record("p0-a", "on partition 0").toBuilder()
                        .setPartition(0)
                        .setTimestampMs(1_700_000_000_000L)
                        .build(),
                    record("p0-b", "also partition 0, duplicate header keys").toBuilder()
                        .setPartition(0)
                        .setTimestampMs(1_700_000_000_001L)
                        .addHeaders(header("dup", "1"))
                        .addHeaders(header("dup", "2"))
                        .addHeaders(header("empty", ""))
                        .addHeaders(header("dup", "3"))
                        .build(),
                    Record.newBuilder().setKey(ByteString.copyFromUtf8("tombstone")).build(), // null value
                    record("", ""), // empty, not null
                    record(null, "no key"), // null key
                    record("bad-topic", "never sent").toBuilder().setTopic(BAD_TOPIC).build(),
                    record("after-bad", "stored")),
                false),
            Map.of(5, ErrorCode.ERROR_CODE_INVALID_RECORD)));
    List<Record> compact = new ArrayList<>();
    for (int j = 0; j < 5; j++) {
      compact.add(record("k-" + (j % 7), "compact " + j));
    }
    batches.add(new Batch(request(102, compact, true), Map.of()));
    for (int b = 103; b < 107; b++) {
      List<Record> bulk = new ArrayList<>();
      for (int j = 0; j < 20; j++) {
        bulk.add(
            record("k-" + (j % 7), "bulk " + b + "-" + j).toBuilder()
                .addHeaders(header("batch", String.valueOf(b)))
                .build());
      }
      batches.add(new Batch(request(b, bulk, false), Map.of()));
    }
    return batches;
  }

  /**
   * Sends richBatches() through {@code settings}' gateway, checks the acks and reads the records
   * back; {@code stamped}: the headers the gateway adds after each record's own.
   */
  static void roundTrip(ConnectionSettings settings, List<Map.Entry<String, byte[]>> stamped)
      throws Exception {
    List<Batch> batches = richBatches();
    List<Long> completed = Collections.synchronizedList(new ArrayList<>());
    List<CompletableFuture<ProduceResponse>> futures = new ArrayList<>();
    try (GatewayProducer producer = GatewayProducer.newBuilder(settings).maxInFlight(3).build()) {
      for (Batch batch : batches) {
        long id = batch.request().getBatchId();
        futures.add(producer.send(batch.request()).whenComplete((r, e) -> completed.add(id)));
      }
      CompletableFuture.allOf(futures.toArray(new CompletableFuture<?>[0])).get(60, TimeUnit.SECONDS);
      assertEquals(1, producer.streamsOpened(), "one stream, no reconnect");
    }
    List<Long> sent = batches.stream().map(b -> b.request().getBatchId()).toList();
    assertEquals(sent, completed, "responses complete in batch order, each once");

    List<Kafka.Expected> expected = new ArrayList<>();
    Map<Integer, Long> lastOffset = new HashMap<>();
    Map<ByteString, Integer> partitionOfKey = new HashMap<>();
    int failed = 0;
    for (int b = 0; b < batches.size(); b++) {
      ProduceRequest request = batches.get(b).request();
      ProduceResponse response = futures.get(b).get();
      assertEquals(request.getBatchId(), response.getBatchId(), "batch_id echoed");
      assertEquals(request.getRecordsCount(), response.getResultsCount(), "one result per record");
      for (int i = 0; i < request.getRecordsCount(); i++) {
        Record record = request.getRecords(i);
        RecordResult result = response.getResults(i);
        String where = "batch " + request.getBatchId() + " record " + i;
        ErrorCode code = batches.get(b).failures().get(i);
        if (code != null) {
          assertTrue(result.hasError(), where + ": expected " + code + ", got " + result);
          assertEquals(code, result.getError().getCode(), where + ": " + result.getError());
          assertFalse(result.getError().getRetriable(), where + ": not retriable");
          assertFalse(result.getError().getMayBeStored(), where + ": never sent, so not stored");
          System.out.println(where + ": " + code + ": " + result.getError().getMessage());
          failed++;
          continue;
        }
        assertTrue(result.hasOk(), where + ": expected an ack, got " + result);
        RecordMetadata ok = result.getOk();
        if (request.getCompactAcks()) {
          assertEquals("", ok.getTopic(), where + ": a compact ack leaves the topic out");
          assertEquals(topic(), response.getTopic(), where + ": the response names it");
        } else {
          assertEquals(topic(), ok.getTopic(), where + ": topic");
        }
        if (record.hasPartition()) {
          assertEquals(record.getPartition(), ok.getPartition(), where + ": the partition asked for");
        } else if (record.hasKey()) {
          Integer first = partitionOfKey.putIfAbsent(record.getKey(), ok.getPartition());
          assertTrue(first == null || first == ok.getPartition(), where + ": one key, one partition");
        }
        assertTrue(ok.getOffset() >= 0, where + ": offset " + ok.getOffset());
        Long before = lastOffset.put(ok.getPartition(), ok.getOffset());
        assertTrue(
            before == null || ok.getOffset() > before,
            where + ": offset " + ok.getOffset() + " in partition " + ok.getPartition() + " after " + before);
        List<Map.Entry<String, byte[]>> headers = new ArrayList<>();
        for (Header h : record.getHeadersList()) {
          headers.add(entry(h.getKey(), h.getValue().toByteArray()));
        }
        headers.addAll(stamped);
        expected.add(
            new Kafka.Expected(
                topic(),
                ok.getPartition(),
                ok.getOffset(),
                record.hasKey() ? record.getKey().toByteArray() : null,
                record.hasValue() ? record.getValue().toByteArray() : null,
                headers,
                record.hasTimestampMs() ? record.getTimestampMs() : null));
      }
    }
    System.out.printf(
        "%s: %d acks in batch order over partitions %s, %d per-record error%n",
        settings.target(), expected.size(), lastOffset.keySet(), failed);
    assertEquals(1, failed);
    Kafka.assertStored(TestEnv.bootstrapServers(), expected);
  }

  static ProduceRequest request(long batchId, List<Record> records, boolean compactAcks) {
    return ProduceRequest.newBuilder()
        .setBatchId(batchId)
        .setTopic(topic())
        .addAllRecords(records)
        .setCompactAcks(compactAcks)
        .build();
  }

  /** A record; a null key or value stays unset (null in Kafka). */
  static Record record(String key, String value) {
    Record.Builder r = Record.newBuilder();
    if (key != null) {
      r.setKey(ByteString.copyFromUtf8(key));
    }
    if (value != null) {
      r.setValue(ByteString.copyFromUtf8(value));
    }
    return r.build();
  }

  static Header header(String key, String value) {
    return Header.newBuilder().setKey(key).setValue(ByteString.copyFromUtf8(value)).build();
  }

  static Map.Entry<String, byte[]> entry(String key, String value) {
    return entry(key, value.getBytes(StandardCharsets.UTF_8));
  }

  static Map.Entry<String, byte[]> entry(String key, byte[] value) {
    return new SimpleImmutableEntry<>(key, value);
  }

  static byte[] bytes(String s) {
    return s == null ? null : s.getBytes(StandardCharsets.UTF_8);
  }
}
