/*
 * The command-line example: reads records from standard input, one a line
 * (`VALUE`, or `KEY<TAB>VALUE`), sends them to the gateway on one Produce
 * stream in batches (what has arrived, up to 500 lines a batch), and prints
 * one line per record, in input order: `topic/partition@offset` when Kafka
 * stored it, `error CODE: message` when not.
 *
 *   mvn -q compile exec:java -Dexec.args='127.0.0.1:50051 orders' < lines.txt
 *
 * Arguments: [TARGET] [TOPIC], default $KAFKA_GATEWAY_TARGET or
 * 127.0.0.1:50051, and orders. TLS and the token come from KAFKA_GATEWAY_CA,
 * KAFKA_GATEWAY_CLIENT_CERT, KAFKA_GATEWAY_CLIENT_KEY,
 * KAFKA_GATEWAY_TLS_SERVER_NAME and KAFKA_GATEWAY_TOKEN (see
 * ConnectionSettings). Exit status: 0 when every record was stored, 1 when
 * one was not or the stream failed, 64 for bad arguments.
 */
package dev.kafkagateway.example;

import com.google.protobuf.ByteString;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.LinkedBlockingQueue;
import kafka_gateway.v1.ProducerOuterClass.ProduceResponse;
import kafka_gateway.v1.ProducerOuterClass.Record;
import kafka_gateway.v1.ProducerOuterClass.RecordError;
import kafka_gateway.v1.ProducerOuterClass.RecordMetadata;
import kafka_gateway.v1.ProducerOuterClass.RecordResult;

/** Produces standard input's lines and prints their acks; see the top of this file. */
public final class ProduceLines {
  /** Lines per batch at most: large enough to amortize a round trip, small enough for one HTTP/2 window. */
  static final int MAX_BATCH = 500;
  static final String DEFAULT_TARGET = "127.0.0.1:50051";
  static final String DEFAULT_TOPIC = "orders";
  static final int EX_USAGE = 64;

  private ProduceLines() {}

  public static void main(String[] args) throws Exception {
    if (args.length > 2 || (args.length > 0 && args[0].startsWith("-"))) {
      System.err.println("usage: ProduceLines [TARGET] [TOPIC]  (records on stdin: VALUE or KEY<TAB>VALUE)");
      System.exit(EX_USAGE);
    }
    String target =
        args.length > 0 ? args[0] : System.getenv().getOrDefault("KAFKA_GATEWAY_TARGET", DEFAULT_TARGET);
    String topic = args.length > 1 ? args[1] : DEFAULT_TOPIC;
    ConnectionSettings settings;
    try {
      settings = ConnectionSettings.fromEnvironment(target, System.getenv());
    } catch (IllegalArgumentException e) {
      System.err.println("error: " + e.getMessage());
      System.exit(EX_USAGE);
      return;
    }
    var in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    System.exit(run(settings, topic, in, System.out, System.err));
  }

  /** Produces {@code in}'s lines to {@code topic}, prints one line per record to {@code out}; the exit status. */
  static int run(ConnectionSettings settings, String topic, BufferedReader in, PrintStream out, PrintStream err)
      throws InterruptedException {
    BlockingQueue<Sent> sent = new LinkedBlockingQueue<>();
    Printer printer = new Printer(sent, out, err);
    Thread printing = new Thread(printer, "print-acks");
    printing.start();
    try (GatewayProducer producer = GatewayProducer.newBuilder(settings).build()) {
      List<Record> batch;
      while (!(batch = readBatch(in)).isEmpty()) {
        sent.put(new Sent(batch.size(), producer.send(topic, batch)));
      }
    } catch (IOException e) {
      err.println("error: reading standard input: " + e.getMessage());
      printer.failed = true;
    } catch (UncheckedIOException e) {
      err.println("error: " + e.getMessage());
      printer.failed = true;
    } finally {
      sent.put(Sent.END);
      printing.join();
    }
    return printer.failed ? 1 : 0;
  }

  /** The next batch: one line (waiting for it), then whatever else is already there, up to MAX_BATCH. */
  static List<Record> readBatch(BufferedReader in) throws IOException {
    List<Record> batch = new ArrayList<>();
    String line;
    while (batch.size() < MAX_BATCH && (batch.isEmpty() || in.ready()) && (line = in.readLine()) != null) {
      batch.add(record(line));
    }
    return batch;
  }

  /** `VALUE` (a record with a null key) or `KEY<TAB>VALUE`. */
  static Record record(String line) {
    Record.Builder record = Record.newBuilder();
    int tab = line.indexOf('\t');
    if (tab >= 0) {
      record.setKey(ByteString.copyFromUtf8(line.substring(0, tab)));
      line = line.substring(tab + 1);
    }
    return record.setValue(ByteString.copyFromUtf8(line)).build();
  }

  /** One line for one record's result. */
  static String describe(ProduceResponse response, RecordResult result) {
    if (result.hasOk()) {
      RecordMetadata ok = result.getOk();
      String topic = ok.getTopic().isEmpty() ? response.getTopic() : ok.getTopic();
      return topic + "/" + ok.getPartition() + "@" + ok.getOffset();
    }
    RecordError error = result.getError();
    return "error " + error.getCode() + ": " + error.getMessage()
        + (error.getRetriable() ? " (retriable)" : "");
  }

  /** A stream failure in one line: the status, and what caused it when gRPC knows. */
  static String describe(Throwable failure) {
    if (!(failure instanceof StatusRuntimeException e)) {
      return String.valueOf(failure);
    }
    Status status = e.getStatus();
    String line = status.getCode() + ": " + status.getDescription();
    return status.getCause() == null ? line : line + " (" + status.getCause().getMessage() + ")";
  }

  /** A batch's future and its size, in send order. */
  private record Sent(int records, CompletableFuture<ProduceResponse> response) {
    static final Sent END = new Sent(0, null);
  }

  /** Prints each batch's results as its future completes, in send order. */
  private static final class Printer implements Runnable {
    private final BlockingQueue<Sent> sent;
    private final PrintStream out;
    private final PrintStream err;
    volatile boolean failed;

    Printer(BlockingQueue<Sent> sent, PrintStream out, PrintStream err) {
      this.sent = sent;
      this.out = out;
      this.err = err;
    }

    @Override
    public void run() {
      try {
        for (Sent batch = sent.take(); batch != Sent.END; batch = sent.take()) {
          try {
            ProduceResponse response = batch.response.join();
            for (RecordResult result : response.getResultsList()) {
              failed |= !result.hasOk();
              out.println(describe(response, result));
            }
          } catch (CompletionException e) {
            // The stream broke and could not be resumed: these records may or may not be stored.
            failed = true;
            String why = describe(e.getCause());
            for (int i = 0; i < batch.records; i++) {
              out.println("error stream failed: " + why);
            }
          }
          out.flush();
        }
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
      if (failed) {
        err.println("some records were not stored (see the error lines)");
      }
    }
  }
}
