/*
 * A producer for kafka-gateway's Produce stream: batches go out on one
 * long-lived bidi stream and each send returns a future of the batch's
 * response. The gateway answers every batch exactly once, in send order, so
 * the futures complete in send order, one at a time (failures included: the
 * outcomes are queued in the order they are decided and delivered through
 * one SynchronizationContext), on a gRPC thread or the one that closes the
 * producer. Callbacks on the futures must not block: the next answers wait
 * for them.
 *
 * Flow control: at most maxInFlight batches are unanswered at once (send
 * blocks beyond that, like KafkaProducer.send when its buffer is full), and a
 * batch is written to the stream only while gRPC says it is ready
 * (ClientCallStreamObserver.isReady and its on-ready handler), so a gateway
 * that stops reading slows the caller down instead of filling memory.
 *
 * Failures: when the stream ends with RESOURCE_EXHAUSTED or UNAVAILABLE (the
 * gateway is over a limit, restarting or draining), the producer opens a new
 * stream after a backoff and sends again, in order, exactly the batches that
 * got no response; after maxAttempts failures in a row without a response in
 * between, or on any other status, every unanswered future fails with the
 * stream's StatusRuntimeException. A batch that got no response may have
 * been stored (see the proto), so a resend may store it twice: delivery is
 * at least once.
 *
 * Tracing: each stream carries the W3C traceparent of the OpenTelemetry
 * context current when its first batch was sent (TraceContextInterceptor).
 */
package dev.kafkagateway.example;

import io.grpc.Channel;
import io.grpc.ClientInterceptors;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.SynchronizationContext;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.opentelemetry.api.trace.propagation.W3CTraceContextPropagator;
import io.opentelemetry.context.Context;
import io.opentelemetry.context.Scope;
import io.opentelemetry.context.propagation.TextMapPropagator;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.Semaphore;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Level;
import java.util.logging.Logger;
import kafka_gateway.v1.ProducerGrpc;
import kafka_gateway.v1.ProducerOuterClass.ProduceRequest;
import kafka_gateway.v1.ProducerOuterClass.ProduceResponse;
import kafka_gateway.v1.ProducerOuterClass.Record;

/** Sends batches on a kafka-gateway Produce stream; see the top of this file. */
public final class GatewayProducer implements AutoCloseable {
  /** Unanswered batches allowed at once: enough to keep a stream busy, few enough to bound memory. */
  public static final int DEFAULT_MAX_IN_FLIGHT = 16;
  /** Stream failures in a row, without a response in between, before giving up. */
  public static final int DEFAULT_MAX_ATTEMPTS = 5;
  /** The wait before the first reconnect; it doubles (with jitter) up to DEFAULT_MAX_BACKOFF. */
  public static final Duration DEFAULT_INITIAL_BACKOFF = Duration.ofMillis(200);
  public static final Duration DEFAULT_MAX_BACKOFF = Duration.ofSeconds(5);
  /** How long close() waits for unanswered batches before cancelling the stream. */
  public static final Duration DEFAULT_CLOSE_TIMEOUT = Duration.ofSeconds(30);
  /** The statuses that say "try again on a new stream": over a limit, or the gateway went away. */
  public static final Set<Status.Code> RECONNECT_ON =
      Set.of(Status.Code.RESOURCE_EXHAUSTED, Status.Code.UNAVAILABLE);

  private static final Logger log = Logger.getLogger(GatewayProducer.class.getName());

  private final ProducerGrpc.ProducerStub stub;
  /** The channel this producer opened and so shuts down; null when the caller owns it. */
  private final ManagedChannel ownedChannel;
  private final int maxInFlight;
  private final int maxAttempts;
  private final Duration initialBackoff;
  private final Duration maxBackoff;
  /** One permit per batch that may be unanswered: send() takes one, the batch's answer returns it. */
  private final Semaphore window;
  /** Runs the delayed reconnects; a daemon thread, so a forgotten close() cannot keep the JVM up. */
  private final ScheduledExecutorService scheduler;
  /** Delivers the outcomes one at a time, in the order they were queued (under the lock). */
  private final SynchronizationContext deliveries =
      new SynchronizationContext(
          (thread, e) -> log.log(Level.WARNING, "delivering a batch's outcome failed", e));
  /** batch_id of send(topic, records): 1, 2, 3, ... */
  private final AtomicLong nextBatchId = new AtomicLong(1);

  /** Guards everything below, and every call on the current stream's request side. */
  private final Object lock = new Object();
  /** Written to the current stream, awaiting their responses, oldest first. */
  private final ArrayDeque<Batch> inFlight = new ArrayDeque<>();
  /** Not yet written to the current stream (it is not ready, or there is none), oldest first. */
  private final ArrayDeque<Batch> pending = new ArrayDeque<>();
  /** The open stream, or null: none yet, or it failed and a new one is not open yet. */
  private Stream stream;
  /** Stream failures since the last response; reset by every response. */
  private int failures;
  /** A reconnect is scheduled: send() must not open a stream of its own meanwhile. */
  private boolean reconnecting;
  /** close() was called: send() refuses new batches (unanswered ones still get their answers). */
  private boolean closed;
  /** close() gave up waiting or is done: no stream is opened any more. */
  private boolean terminated;
  /** Streams opened so far (the first one included): for logs and tests. */
  private int streamsOpened;

  private GatewayProducer(Builder builder) {
    Channel channel =
        ClientInterceptors.intercept(builder.channel, new TraceContextInterceptor(builder.propagator));
    this.stub = ProducerGrpc.newStub(channel);
    this.ownedChannel = builder.ownedChannel;
    this.maxInFlight = builder.maxInFlight;
    this.maxAttempts = builder.maxAttempts;
    this.initialBackoff = builder.initialBackoff;
    this.maxBackoff = builder.maxBackoff;
    this.window = new Semaphore(maxInFlight);
    this.scheduler =
        Executors.newSingleThreadScheduledExecutor(
            r -> {
              Thread t = new Thread(r, "gateway-producer-reconnect");
              t.setDaemon(true);
              return t;
            });
  }

  /** A producer on a channel the caller owns (and shuts down after close()). */
  public static Builder newBuilder(Channel channel) {
    return new Builder(Objects.requireNonNull(channel, "channel"), null);
  }

  /** A producer on a new channel to the gateway the settings name; close() shuts the channel down. */
  public static Builder newBuilder(ConnectionSettings settings) {
    ManagedChannel channel = settings.openChannel();
    return new Builder(channel, channel);
  }

  /**
   * Sends a batch of records to {@code topic} with the next batch_id of this producer. Blocks while
   * maxInFlight batches are unanswered.
   */
  public CompletableFuture<ProduceResponse> send(String topic, List<Record> records)
      throws InterruptedException {
    return send(
        ProduceRequest.newBuilder()
            .setBatchId(nextBatchId.getAndIncrement())
            .setTopic(topic)
            .addAllRecords(records)
            .build());
  }

  /**
   * Sends one batch as it is (its batch_id is the caller's) and returns its response: completed in
   * send order, or failed with a StatusRuntimeException when the stream broke and could not be
   * resumed. Blocks while maxInFlight batches are unanswered.
   */
  public CompletableFuture<ProduceResponse> send(ProduceRequest request)
      throws InterruptedException {
    if (!request.getTransactionalId().isEmpty()) {
      // A resend on a new stream would leave the transaction: use a plain Produce stub for those.
      throw new IllegalArgumentException(
          "GatewayProducer does not run transactional streams (transactional_id is set): "
              + "use ProducerGrpc directly, where a broken stream aborts the transaction");
    }
    window.acquire();
    Batch batch = new Batch(request, Context.current());
    synchronized (lock) {
      if (closed) {
        window.release();
        throw new IllegalStateException("send after close(): create a new GatewayProducer");
      }
      pending.add(batch);
      if (stream == null && !reconnecting) {
        openStream();
      } else if (stream != null) {
        stream.drain();
      }
    }
    return batch.future;
  }

  /** Blocks until every batch sent so far is answered or failed. */
  public void flush() throws InterruptedException {
    window.acquire(maxInFlight);
    window.release(maxInFlight);
  }

  /** Streams opened so far, the first included: 1 means no reconnect happened. */
  public int streamsOpened() {
    synchronized (lock) {
      return streamsOpened;
    }
  }

  /** Batches sent but not yet written to the stream: those gRPC's flow control is holding back. */
  public int queuedBatches() {
    synchronized (lock) {
      return pending.size();
    }
  }

  /** Waits up to DEFAULT_CLOSE_TIMEOUT for unanswered batches, then ends the stream; see close(Duration). */
  @Override
  public void close() {
    close(DEFAULT_CLOSE_TIMEOUT);
  }

  /**
   * Refuses new batches, waits up to {@code timeout} for the unanswered ones, half-closes the
   * stream and, if this producer opened the channel, shuts it down. Batches still unanswered after
   * the timeout (or when the calling thread is interrupted) fail with CANCELLED; an interrupt is
   * kept on the thread.
   */
  public void close(Duration timeout) {
    synchronized (lock) {
      closed = true;
    }
    long deadline = System.nanoTime() + timeout.toNanos();
    boolean interrupted = false;
    boolean drained = false;
    try {
      // All permits back: every batch answered (or failed), reconnects included.
      drained = window.tryAcquire(maxInFlight, timeout.toNanos(), TimeUnit.NANOSECONDS);
    } catch (InterruptedException e) {
      interrupted = true;
    }
    Stream last;
    synchronized (lock) {
      terminated = true;
      last = stream;
      stream = null;
      if (last != null) {
        if (drained) {
          last.requests.onCompleted();
        } else {
          last.requests.cancel("GatewayProducer.close gave up waiting", null);
        }
      }
      failAll(
          Status.CANCELLED.withDescription(
              "GatewayProducer closed with the batch unanswered (close timeout " + timeout + ")"));
    }
    deliveries.drain();
    scheduler.shutdownNow();
    try {
      if (last != null && !interrupted) {
        last.done.await(remaining(deadline), TimeUnit.NANOSECONDS);
      }
      if (ownedChannel != null) {
        ownedChannel.shutdown();
        if (interrupted || !ownedChannel.awaitTermination(remaining(deadline), TimeUnit.NANOSECONDS)) {
          ownedChannel.shutdownNow();
        }
      }
    } catch (InterruptedException e) {
      interrupted = true;
      if (ownedChannel != null) {
        ownedChannel.shutdownNow();
      }
    }
    if (drained) {
      window.release(maxInFlight); // wakes senders blocked in send(), which then see closed
    }
    if (interrupted) {
      Thread.currentThread().interrupt();
    }
  }

  private static long remaining(long deadline) {
    return Math.max(0, deadline - System.nanoTime());
  }

  /** Opens a stream carrying the trace context of the oldest batch it will send. Holds the lock. */
  private void openStream() {
    Stream s = new Stream();
    stream = s;
    streamsOpened++;
    Context context = pending.isEmpty() ? Context.current() : pending.peek().context;
    try (Scope ignored = context.makeCurrent()) {
      stub.produce(s); // calls s.beforeStart, which installs the on-ready handler
    }
    s.drain();
  }

  /** Called by the stream's observer when the gateway answered the oldest batch. */
  private void onResponse(Stream s, ProduceResponse response) {
    synchronized (lock) {
      if (stream != s) {
        return; // a stream we already gave up on
      }
      Batch batch = inFlight.peek();
      String mismatch = null;
      if (batch == null) {
        mismatch = "a response (batch_id " + response.getBatchId() + ") to no batch";
      } else if (response.getBatchId() != batch.request.getBatchId()
          || response.getResultsCount() != batch.request.getRecordsCount()) {
        mismatch =
            String.format(
                "a response for batch_id %d with %d results where batch_id %d with %d was due",
                response.getBatchId(),
                response.getResultsCount(),
                batch.request.getBatchId(),
                batch.request.getRecordsCount());
      }
      if (mismatch == null) {
        inFlight.poll();
        failures = 0;
        deliveries.executeLater(
            () -> {
              window.release();
              batch.future.complete(response);
            });
      } else {
        // Not the protocol: nothing more on this stream can be trusted.
        stream = null;
        s.requests.cancel("protocol violation: " + mismatch, null);
        failAll(Status.INTERNAL.withDescription("the gateway broke the protocol: " + mismatch));
      }
    }
    // Outside the lock: the callbacks run here, and may call send().
    deliveries.drain();
  }

  /** Called by the stream's observer when the stream ended, with OK when the gateway closed it. */
  private void onStreamEnd(Stream s, Status status) {
    synchronized (lock) {
      if (stream != s) {
        return;
      }
      stream = null;
      // What got no response goes first, then what was never written: the original order.
      while (!inFlight.isEmpty()) {
        pending.addFirst(inFlight.pollLast());
      }
      if (pending.isEmpty()) {
        return; // an idle stream ended: the next send opens a new one
      }
      if (status.isOk()) {
        status =
            Status.UNAVAILABLE.withDescription(
                "the gateway ended the stream with " + pending.size() + " batches unanswered");
      }
      if (terminated || !RECONNECT_ON.contains(status.getCode()) || failures + 1 >= maxAttempts) {
        failAll(status);
      } else {
        failures++;
        long delay = backoffMillis(failures);
        log.log(
            Level.INFO,
            "Produce stream failed ({0}: {1}); resending {2} unanswered batches on a new stream"
                + " in {3} ms (attempt {4} of {5})",
            new Object[] {
              status.getCode(),
              status.getCause() == null
                  ? status.getDescription()
                  : status.getDescription() + " (" + status.getCause().getMessage() + ")",
              pending.size(),
              delay,
              failures + 1,
              maxAttempts
            });
        reconnecting = true;
        scheduler.schedule(this::reconnect, delay, TimeUnit.MILLISECONDS);
      }
    }
    deliveries.drain();
  }

  private void reconnect() {
    synchronized (lock) {
      reconnecting = false;
      if (stream == null && !pending.isEmpty() && !terminated) {
        openStream();
      }
    }
  }

  /**
   * Queues the failure of every unanswered batch, oldest first, behind the outcomes queued before.
   * Holds the lock; the caller drains the deliveries after releasing it.
   */
  private void failAll(Status status) {
    List<Batch> batches = new ArrayList<>(inFlight);
    batches.addAll(pending);
    inFlight.clear();
    pending.clear();
    failures = 0;
    StatusRuntimeException error = status.asRuntimeException();
    for (Batch batch : batches) {
      deliveries.executeLater(
          () -> {
            window.release();
            batch.future.completeExceptionally(error);
          });
    }
  }

  /** initialBackoff * 2^(attempt-1), capped at maxBackoff, minus up to 20% jitter. */
  private long backoffMillis(int attempt) {
    long base = initialBackoff.toMillis() << Math.min(attempt - 1, 20);
    long capped = Math.min(base, maxBackoff.toMillis());
    return capped - ThreadLocalRandom.current().nextLong(capped / 5 + 1);
  }

  /** One batch, its future, and the trace context it was sent in. */
  private static final class Batch {
    final ProduceRequest request;
    final CompletableFuture<ProduceResponse> future = new CompletableFuture<>();
    final Context context;

    Batch(ProduceRequest request, Context context) {
      this.request = request;
      this.context = context;
    }
  }

  /** One Produce stream: writes pending batches while gRPC is ready, routes responses back. */
  private final class Stream implements ClientResponseObserver<ProduceRequest, ProduceResponse> {
    ClientCallStreamObserver<ProduceRequest> requests;
    /** Counted down when the gateway ended the stream, which close() waits for. */
    final CountDownLatch done = new CountDownLatch(1);

    @Override
    public void beforeStart(ClientCallStreamObserver<ProduceRequest> requestStream) {
      this.requests = requestStream;
      requestStream.setOnReadyHandler(
          () -> {
            synchronized (lock) {
              if (stream == this) {
                drain();
              }
            }
          });
    }

    /** Writes pending batches while the transport takes them. Holds the lock. */
    void drain() {
      while (!pending.isEmpty() && requests.isReady()) {
        Batch batch = pending.poll();
        inFlight.add(batch);
        requests.onNext(batch.request);
      }
    }

    @Override
    public void onNext(ProduceResponse response) {
      onResponse(this, response);
    }

    @Override
    public void onError(Throwable t) {
      done.countDown();
      onStreamEnd(this, Status.fromThrowable(t));
    }

    @Override
    public void onCompleted() {
      done.countDown();
      onStreamEnd(this, Status.OK);
    }
  }

  /** Settings of a GatewayProducer; every one has a default. */
  public static final class Builder {
    private final Channel channel;
    private final ManagedChannel ownedChannel;
    private int maxInFlight = DEFAULT_MAX_IN_FLIGHT;
    private int maxAttempts = DEFAULT_MAX_ATTEMPTS;
    private Duration initialBackoff = DEFAULT_INITIAL_BACKOFF;
    private Duration maxBackoff = DEFAULT_MAX_BACKOFF;
    private TextMapPropagator propagator = W3CTraceContextPropagator.getInstance();

    private Builder(Channel channel, ManagedChannel ownedChannel) {
      this.channel = channel;
      this.ownedChannel = ownedChannel;
    }

    /** Unanswered batches allowed at once; send() blocks beyond. */
    public Builder maxInFlight(int maxInFlight) {
      if (maxInFlight < 1) {
        throw new IllegalArgumentException("maxInFlight must be at least 1, not " + maxInFlight);
      }
      this.maxInFlight = maxInFlight;
      return this;
    }

    /** Streams tried in a row without a response before the unanswered batches fail (1: never reconnect). */
    public Builder maxAttempts(int maxAttempts) {
      if (maxAttempts < 1) {
        throw new IllegalArgumentException("maxAttempts must be at least 1, not " + maxAttempts);
      }
      this.maxAttempts = maxAttempts;
      return this;
    }

    /** The first reconnect's wait and the cap the doubling stops at. */
    public Builder backoff(Duration initial, Duration max) {
      if (initial.isNegative() || max.compareTo(initial) < 0) {
        throw new IllegalArgumentException(
            "backoff: need 0 <= initial <= max, got " + initial + " and " + max);
      }
      this.initialBackoff = initial;
      this.maxBackoff = max;
      return this;
    }

    /**
     * How the trace context travels; default W3C traceparent/tracestate. Pass
     * GlobalOpenTelemetry.getPropagators().getTextMapPropagator() to follow the application's setup.
     */
    public Builder propagator(TextMapPropagator propagator) {
      this.propagator = Objects.requireNonNull(propagator, "propagator");
      return this;
    }

    public GatewayProducer build() {
      return new GatewayProducer(this);
    }
  }
}
