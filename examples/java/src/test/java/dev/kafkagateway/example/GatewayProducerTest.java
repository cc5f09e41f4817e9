/*
 * GatewayProducer against an in-process fake gateway (FakeGateway), for
 * what a real gateway does not do on demand: a stream that fails after
 * answering some batches (only the unanswered ones are sent again, in order,
 * and the caller sees every answer once, in order), failures in a row up to
 * the attempt limit, a status that is not worth a new stream, a server that
 * stops reading (flow control holds batches back), the in-flight bound, and
 * the W3C traceparent on each stream. No gateway or Kafka needed.
 */
package dev.kafkagateway.example;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.SpanContext;
import io.opentelemetry.api.trace.TraceFlags;
import io.opentelemetry.api.trace.TraceState;
import io.opentelemetry.context.Scope;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import kafka_gateway.v1.ProducerOuterClass.ProduceRequest;
import kafka_gateway.v1.ProducerOuterClass.ProduceResponse;
import kafka_gateway.v1.ProducerOuterClass.Record;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(60)
class GatewayProducerTest {
  static final Metadata.Key<String> TRACEPARENT =
      Metadata.Key.of("traceparent", Metadata.ASCII_STRING_MARSHALLER);

  /** Sends batches 1..n, each recording the order its future completes in. */
  static final class Client {
    final GatewayProducer producer;
    final List<CompletableFuture<ProduceResponse>> futures = new ArrayList<>();
    final List<Long> completed = Collections.synchronizedList(new ArrayList<>());

    Client(GatewayProducer producer) {
      this.producer = producer;
    }

    void send(int n) throws InterruptedException {
      for (int i = 0; i < n; i++) {
        long id = futures.size() + 1;
        futures.add(producer.send(batch(id)).whenComplete((r, e) -> completed.add(id)));
      }
    }

    void awaitAll() {
      try {
        CompletableFuture.allOf(futures.toArray(new CompletableFuture<?>[0])).get(30, TimeUnit.SECONDS);
      } catch (Exception e) {
        // Some tests expect failures; each future is checked on its own.
      }
    }
  }

  static GatewayProducer.Builder fastRetries(FakeGateway fake) {
    return GatewayProducer.newBuilder(fake.channel).backoff(Duration.ofMillis(10), Duration.ofMillis(50));
  }

  @Test
  void afterUnavailableOnlyTheUnansweredBatchesAreSentAgainInOrder() throws Exception {
    try (FakeGateway fake =
        new FakeGateway(
            (stream, batch) -> {
              if (stream.index == 0) {
                // Hold the first stream's batches until all six are there; answer two, then fail.
                if (stream.received.size() == 6) {
                  stream.ack(stream.received.get(0));
                  stream.ack(stream.received.get(1));
                  stream.responses.onError(Status.UNAVAILABLE.withDescription("gateway restarting").asRuntimeException());
                }
              } else {
                stream.ack(batch);
              }
            },
            false)) {
      Client client = new Client(fastRetries(fake).maxInFlight(10).build());
      client.send(6);
      client.awaitAll();
      assertEquals(List.of(List.of(1L, 2L, 3L, 4L, 5L, 6L), List.of(3L, 4L, 5L, 6L)), fake.batchIdsPerStream());
      assertEquals(List.of(1L, 2L, 3L, 4L, 5L, 6L), client.completed, "every answer once, in order");
      for (int i = 0; i < 6; i++) {
        assertEquals(i + 1, client.futures.get(i).join().getBatchId());
      }
      assertEquals(2, client.producer.streamsOpened());
      client.producer.close();
    }
  }

  @Test
  void resourceExhaustedThenUnavailableInARowStillResumesOnTheThirdStream() throws Exception {
    try (FakeGateway fake =
        new FakeGateway(
            (stream, batch) -> {
              switch (stream.index) {
                case 0 -> {
                  if (stream.received.size() == 3) {
                    stream.ack(stream.received.get(0));
                    stream.responses.onError(
                        Status.RESOURCE_EXHAUSTED.withDescription("raise --max-streams").asRuntimeException());
                  }
                }
                case 1 -> {
                  if (stream.received.size() == 2) {
                    stream.responses.onError(Status.UNAVAILABLE.asRuntimeException());
                  }
                }
                default -> stream.ack(batch);
              }
            },
            false)) {
      Client client = new Client(fastRetries(fake).maxAttempts(3).build());
      client.send(3);
      client.awaitAll();
      assertEquals(
          List.of(List.of(1L, 2L, 3L), List.of(2L, 3L), List.of(2L, 3L)), fake.batchIdsPerStream());
      assertEquals(List.of(1L, 2L, 3L), client.completed);
      client.futures.forEach(f -> assertFalse(f.isCompletedExceptionally()));
      client.producer.close();
    }
  }

  @Test
  void afterMaxAttemptsFailuresInARowEveryUnansweredBatchFailsInOrder() throws Exception {
    try (FakeGateway fake =
        new FakeGateway(
            (stream, batch) -> {
              if (stream.received.size() == 1) {
                stream.responses.onError(Status.UNAVAILABLE.withDescription("down").asRuntimeException());
              }
            },
            false)) {
      Client client = new Client(fastRetries(fake).maxAttempts(3).build());
      client.send(2);
      client.awaitAll();
      assertEquals(3, fake.streams.size(), "three streams: the first and two more attempts");
      fake.streams.forEach(s -> assertEquals(1L, s.batchIds().get(0), "each stream starts with batch 1"));
      assertEquals(List.of(1L, 2L), client.completed, "failures delivered in order");
      for (CompletableFuture<ProduceResponse> f : client.futures) {
        CompletionException e = org.junit.jupiter.api.Assertions.assertThrows(CompletionException.class, f::join);
        StatusRuntimeException status = assertInstanceOf(StatusRuntimeException.class, e.getCause());
        assertEquals(Status.Code.UNAVAILABLE, status.getStatus().getCode());
      }
      client.producer.close();
    }
  }

  @Test
  void otherStatusesFailAtOnceWithoutANewStream() throws Exception {
    try (FakeGateway fake =
        new FakeGateway(
            (stream, batch) ->
                stream.responses.onError(
                    Status.INVALID_ARGUMENT.withDescription("batch too large: raise --max-batch-bytes").asRuntimeException()),
            false)) {
      Client client = new Client(fastRetries(fake).build());
      client.send(1);
      client.awaitAll();
      CompletionException e = org.junit.jupiter.api.Assertions.assertThrows(CompletionException.class, client.futures.get(0)::join);
      assertEquals(Status.Code.INVALID_ARGUMENT, Status.fromThrowable(e.getCause()).getCode());
      assertEquals(1, fake.streams.size());
      client.producer.close();
    }
  }

  @Test
  void aServerThatStopsReadingHoldsBatchesBackInTheClient() throws Exception {
    // Each batch ~256 KiB: far over gRPC's 32 KiB ready threshold once the server stops reading.
    try (FakeGateway fake = new FakeGateway((stream, batch) -> stream.ack(batch), true)) {
      Client client = new Client(fastRetries(fake).maxInFlight(8).build());
      ByteString big = ByteString.copyFrom(new byte[256 * 1024]);
      for (int i = 1; i <= 6; i++) {
        client.futures.add(
            client.producer.send(
                ProduceRequest.newBuilder()
                    .setBatchId(i)
                    .setTopic("t")
                    .addRecords(Record.newBuilder().setValue(big))
                    .build()));
      }
      waitUntil(() -> !fake.streams.isEmpty() && fake.streams.get(0).received.size() == 1, "the first batch arrives");
      Thread.sleep(200);
      FakeGateway.Stream stream = fake.streams.get(0);
      assertEquals(1, stream.received.size(), "the server asked for one batch only");
      int queued = client.producer.queuedBatches();
      assertTrue(queued >= 3, "the client keeps batches while the stream is not ready, queued: " + queued);
      stream.responses.request(100);
      client.awaitAll();
      assertEquals(List.of(1L, 2L, 3L, 4L, 5L, 6L), stream.batchIds());
      assertEquals(0, client.producer.queuedBatches());
      System.out.println("flow control held back " + queued + " of 6 batches until the server read again");
      client.producer.close();
    }
  }

  @Test
  void sendBlocksWhileMaxInFlightBatchesAreUnanswered() throws Exception {
    try (FakeGateway fake = new FakeGateway((stream, batch) -> {}, false)) {
      Client client = new Client(fastRetries(fake).maxInFlight(2).build());
      client.send(2);
      CountDownLatch third = new CountDownLatch(1);
      Thread sender =
          new Thread(
              () -> {
                try {
                  client.send(1);
                  third.countDown();
                } catch (InterruptedException e) {
                  Thread.currentThread().interrupt();
                }
              });
      sender.start();
      assertFalse(third.await(300, TimeUnit.MILLISECONDS), "a third batch must wait for an answer");
      waitUntil(() -> fake.streams.get(0).received.size() == 2, "both batches arrive");
      FakeGateway.Stream stream = fake.streams.get(0);
      stream.ack(stream.received.get(0));
      assertTrue(third.await(5, TimeUnit.SECONDS), "an answer lets the third batch go");
      waitUntil(() -> stream.received.size() == 3, "the third batch arrives");
      stream.ack(stream.received.get(1));
      stream.ack(stream.received.get(2));
      client.awaitAll();
      assertEquals(List.of(1L, 2L, 3L), client.completed);
      client.producer.close();
    }
  }

  @Test
  void eachStreamCarriesTheTraceparentOfTheCurrentSpanReconnectsIncluded() throws Exception {
    try (FakeGateway fake =
        new FakeGateway(
            (stream, batch) -> {
              if (stream.index == 0) {
                stream.responses.onError(Status.UNAVAILABLE.asRuntimeException());
              } else {
                stream.ack(batch);
              }
            },
            false)) {
      String traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
      String spanId = "00f067aa0ba902b7";
      SpanContext parent =
          SpanContext.create(traceId, spanId, TraceFlags.getSampled(), TraceState.getDefault());
      Client client = new Client(fastRetries(fake).build());
      try (Scope ignored = Span.wrap(parent).makeCurrent()) {
        client.send(1);
      }
      client.awaitAll();
      client.producer.close();
      assertEquals(2, fake.streams.size());
      for (FakeGateway.Stream s : fake.streams) {
        String traceparent = s.headers.get(TRACEPARENT);
        assertEquals("00-" + traceId + "-" + spanId + "-01", traceparent, "stream " + s.index);
      }
      System.out.println("traceparent on both streams: " + fake.streams.get(1).headers.get(TRACEPARENT));

      // No span current: no traceparent.
      Client untraced = new Client(GatewayProducer.newBuilder(fake.channel).build());
      untraced.send(1);
      untraced.awaitAll();
      untraced.producer.close();
      assertNull(fake.streams.get(2).headers.get(TRACEPARENT));
    }
  }

  static ProduceRequest batch(long id) {
    return ProduceRequest.newBuilder()
        .setBatchId(id)
        .setTopic("t")
        .addRecords(Record.newBuilder().setKey(ByteString.copyFromUtf8("k" + id)).setValue(ByteString.copyFromUtf8("v" + id)))
        .addRecords(Record.newBuilder().setValue(ByteString.copyFromUtf8("w" + id)))
        .build();
  }

  static void waitUntil(BooleanSupplier condition, String what) throws InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
    while (!condition.getAsBoolean()) {
      assertTrue(System.nanoTime() < deadline, "timed out waiting: " + what);
      Thread.sleep(10);
    }
  }
}
