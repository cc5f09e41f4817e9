/*
 * An in-process stand-in for the gateway's Producer service (grpc-java's
 * in-process transport), for the tests of what GatewayProducer does when the
 * stream breaks: each test says, per stream, what the fake does with each
 * batch it receives (answer it, hold it, end the stream with a status). The
 * fake records which batches arrived on which stream, and every stream's
 * request headers.
 */
package dev.kafkagateway.example;

import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerBuilder;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import kafka_gateway.v1.ProducerGrpc;
import kafka_gateway.v1.ProducerOuterClass.ProduceRequest;
import kafka_gateway.v1.ProducerOuterClass.ProduceResponse;
import kafka_gateway.v1.ProducerOuterClass.RecordMetadata;
import kafka_gateway.v1.ProducerOuterClass.RecordResult;

final class FakeGateway implements AutoCloseable {
  /** What the fake does when a batch arrives on a stream. */
  interface Behaviour {
    void onBatch(Stream stream, ProduceRequest batch);
  }

  /** One Produce stream as the fake sees it. */
  static final class Stream {
    final int index;
    final Metadata headers;
    final ServerCallStreamObserver<ProduceResponse> responses;
    /** The batches that arrived on this stream, in order. */
    final List<ProduceRequest> received = new CopyOnWriteArrayList<>();

    Stream(int index, Metadata headers, ServerCallStreamObserver<ProduceResponse> responses) {
      this.index = index;
      this.headers = headers;
      this.responses = responses;
    }

    /** Answers {@code batch}: every record stored. */
    void ack(ProduceRequest batch) {
      responses.onNext(FakeGateway.ack(batch));
    }

    List<Long> batchIds() {
      return received.stream().map(ProduceRequest::getBatchId).toList();
    }
  }

  private static final AtomicLong nextOffset = new AtomicLong();

  final List<Stream> streams = new CopyOnWriteArrayList<>();
  private final Server server;
  /** A channel to the in-process fake; null for one on loopback (use target()). */
  final ManagedChannel channel;
  private final ThreadLocal<Metadata> callHeaders = new ThreadLocal<>();

  /**
   * A fake running {@code behaviour}; with {@code manualFlowControl} each stream reads one batch,
   * and more only when the test calls {@code stream.responses.request(n)}.
   */
  FakeGateway(Behaviour behaviour, boolean manualFlowControl) throws IOException {
    this(behaviour, manualFlowControl, false);
  }

  /**
   * With {@code onLoopback}, the fake listens on a free TCP port of 127.0.0.1 (plaintext HTTP/2,
   * reached through ConnectionSettings), not in process.
   */
  FakeGateway(Behaviour behaviour, boolean manualFlowControl, boolean onLoopback) throws IOException {
    String name = "fake-gateway-" + System.nanoTime();
    ProducerGrpc.ProducerImplBase service =
        new ProducerGrpc.ProducerImplBase() {
          @Override
          public StreamObserver<ProduceRequest> produce(StreamObserver<ProduceResponse> observer) {
            var responses = (ServerCallStreamObserver<ProduceResponse>) observer;
            if (manualFlowControl) {
              responses.disableAutoRequest();
              responses.request(1);
            }
            Stream stream = new Stream(streams.size(), callHeaders.get(), responses);
            streams.add(stream);
            return new StreamObserver<>() {
              @Override
              public void onNext(ProduceRequest batch) {
                stream.received.add(batch);
                behaviour.onBatch(stream, batch);
              }

              @Override
              public void onError(Throwable t) {}

              @Override
              public void onCompleted() {
                responses.onCompleted();
              }
            };
          }
        };
    // Hands each call's headers to produce(), which runs on the same thread right after.
    ServerInterceptor headers =
        new ServerInterceptor() {
          @Override
          public <Q, R> ServerCall.Listener<Q> interceptCall(
              ServerCall<Q, R> call, Metadata metadata, ServerCallHandler<Q, R> next) {
            callHeaders.set(metadata);
            try {
              return next.startCall(call, metadata);
            } finally {
              callHeaders.remove();
            }
          }
        };
    ServerBuilder<?> builder =
        onLoopback
            ? Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create())
            : InProcessServerBuilder.forName(name);
    server = builder.addService(ServerInterceptors.intercept(service, headers)).build().start();
    channel = onLoopback ? null : InProcessChannelBuilder.forName(name).build();
  }

  /** The target of a fake on loopback. */
  String target() {
    return "127.0.0.1:" + server.getPort();
  }

  /** Every stream's batch ids, in order. */
  List<List<Long>> batchIdsPerStream() {
    List<List<Long>> out = new ArrayList<>();
    for (Stream s : streams) {
      out.add(s.batchIds());
    }
    return out;
  }

  /** A response storing every record of {@code batch} on partition 0. */
  static ProduceResponse ack(ProduceRequest batch) {
    ProduceResponse.Builder response = ProduceResponse.newBuilder().setBatchId(batch.getBatchId());
    for (int i = 0; i < batch.getRecordsCount(); i++) {
      response.addResults(
          RecordResult.newBuilder()
              .setOk(
                  RecordMetadata.newBuilder()
                      .setTopic(batch.getTopic())
                      .setPartition(0)
                      .setOffset(nextOffset.getAndIncrement())
                      .setTimestampMs(-1)));
    }
    return response.build();
  }

  @Override
  public void close() {
    if (channel != null) {
      channel.shutdownNow();
    }
    server.shutdownNow();
    try {
      if (channel != null) {
        channel.awaitTermination(5, TimeUnit.SECONDS);
      }
      server.awaitTermination(5, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }
}
