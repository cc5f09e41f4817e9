/*
 * Lets Kafka's Java clients (4.x) talk to the gateway's embedded broker,
 * librdkafka's mock cluster, which they cannot reach directly: a 4.x client
 * opens each connection with ApiVersions v5; the mock supports v0-v2, and
 * answers a newer version with a malformed UNSUPPORTED_VERSION response
 * (flexible-version layout, with a trailing throttle time), which the Java
 * client reads as "throttled for 1179648 ms". A real broker answers with a
 * v0 response naming the versions it has, and the client retries with one.
 *
 * This relay sits between the Java clients and the mock brokers and does
 * exactly that: it answers an ApiVersions request newer than the broker's
 * with a v0 UNSUPPORTED_VERSION response carrying the broker's range, and
 * passes everything else through unchanged, except Metadata responses, in
 * which each broker's port is replaced by the port of a relay to it, so
 * that the clients' later connections come through here too. Used only
 * when Kafka.javaBootstrap finds the embedded broker; a real broker is
 * reached directly.
 */
package dev.kafkagateway.example;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

final class EmbeddedBrokerShim {
  static final short API_VERSIONS = 18;
  static final short METADATA = 3;
  static final short UNSUPPORTED_VERSION = 35;
  /** Metadata responses from this version on use the flexible encoding the rewrite reads. */
  static final short FIRST_FLEXIBLE_METADATA = 9;

  /** One relay per broker address, for the life of the test JVM. */
  private static final Map<String, EmbeddedBrokerShim> relays = new ConcurrentHashMap<>();

  private final String host;
  private final int brokerPort;
  private final short maxApiVersions;
  private final ServerSocket listener;

  /** The relay to {@code host:port}, a broker whose ApiVersions versions end at {@code maxApiVersions}. */
  static EmbeddedBrokerShim to(String host, int port, short maxApiVersions) {
    return relays.computeIfAbsent(
        host + ":" + port,
        k -> {
          try {
            return new EmbeddedBrokerShim(host, port, maxApiVersions);
          } catch (IOException e) {
            throw new IllegalStateException("cannot listen for a relay to " + k, e);
          }
        });
  }

  private EmbeddedBrokerShim(String host, int brokerPort, short maxApiVersions) throws IOException {
    this.host = host;
    this.brokerPort = brokerPort;
    this.maxApiVersions = maxApiVersions;
    this.listener = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
    daemon("relay-accept-" + brokerPort, this::accept);
  }

  /** Where the Java clients connect instead of the broker. */
  String address() {
    return "127.0.0.1:" + listener.getLocalPort();
  }

  private void accept() {
    while (true) {
      try {
        Socket client = listener.accept();
        Socket broker = new Socket(host, brokerPort);
        client.setTcpNoDelay(true);
        broker.setTcpNoDelay(true);
        // Correlation id -> api key << 16 | version, of requests waiting for their response.
        Map<Integer, Integer> inFlight = new ConcurrentHashMap<>();
        DataOutputStream toClient = new DataOutputStream(client.getOutputStream());
        daemon("relay-requests-" + brokerPort, () -> requests(client, broker, toClient, inFlight));
        daemon("relay-responses-" + brokerPort, () -> responses(broker, client, toClient, inFlight));
      } catch (IOException e) {
        return;
      }
    }
  }

  private void requests(Socket client, Socket broker, DataOutputStream toClient, Map<Integer, Integer> inFlight) {
    try (InputStream in = client.getInputStream(); OutputStream out = broker.getOutputStream()) {
      DataInputStream frames = new DataInputStream(in);
      DataOutputStream toBroker = new DataOutputStream(out);
      while (true) {
        byte[] frame = readFrame(frames);
        ByteBuffer header = ByteBuffer.wrap(frame);
        short apiKey = header.getShort();
        short version = header.getShort();
        int correlationId = header.getInt();
        if (apiKey == API_VERSIONS && version > maxApiVersions) {
          // What a real broker answers: v0, UNSUPPORTED_VERSION, and its own range.
          ByteBuffer response = ByteBuffer.allocate(4 + 2 + 4 + 6);
          response.putInt(correlationId).putShort(UNSUPPORTED_VERSION).putInt(1);
          response.putShort(API_VERSIONS).putShort((short) 0).putShort(maxApiVersions);
          writeFrame(toClient, response.array());
          continue;
        }
        inFlight.put(correlationId, (apiKey << 16) | (version & 0xffff));
        writeFrame(toBroker, frame);
      }
    } catch (IOException e) {
      close(client, broker);
    }
  }

  private void responses(Socket broker, Socket client, DataOutputStream toClient, Map<Integer, Integer> inFlight) {
    try (InputStream in = broker.getInputStream()) {
      DataInputStream frames = new DataInputStream(in);
      while (true) {
        byte[] frame = readFrame(frames);
        Integer request = inFlight.remove(ByteBuffer.wrap(frame).getInt());
        if (request != null && (request >>> 16) == METADATA) {
          short version = (short) (request & 0xffff);
          if (version < FIRST_FLEXIBLE_METADATA) {
            throw new IOException("Metadata v" + version + ": the relay rewrites v9 and later only");
          }
          relayBrokerPorts(ByteBuffer.wrap(frame));
        }
        writeFrame(toClient, frame);
      }
    } catch (IOException e) {
      close(client, broker);
    }
  }

  /** Replaces, in a flexible Metadata response, each broker's port by its relay's. */
  private void relayBrokerPorts(ByteBuffer response) {
    response.getInt(); // correlation id
    skipTaggedFields(response); // response header v1
    response.getInt(); // throttle_time_ms
    int brokers = readUnsignedVarint(response) - 1;
    for (int i = 0; i < brokers; i++) {
      response.getInt(); // node_id
      byte[] hostBytes = new byte[readUnsignedVarint(response) - 1];
      response.get(hostBytes);
      int at = response.position();
      int port = response.getInt();
      String brokerHost = new String(hostBytes, java.nio.charset.StandardCharsets.UTF_8);
      String relay = to(brokerHost, port, maxApiVersions).address();
      response.putInt(at, Integer.parseInt(relay.substring(relay.lastIndexOf(':') + 1)));
      int rack = readUnsignedVarint(response) - 1; // compact nullable string: -1 is null
      if (rack > 0) {
        response.position(response.position() + rack);
      }
      skipTaggedFields(response);
    }
  }

  private static void skipTaggedFields(ByteBuffer buffer) {
    int fields = readUnsignedVarint(buffer);
    for (int i = 0; i < fields; i++) {
      readUnsignedVarint(buffer); // tag
      int size = readUnsignedVarint(buffer);
      buffer.position(buffer.position() + size);
    }
  }

  private static int readUnsignedVarint(ByteBuffer buffer) {
    int value = 0;
    for (int shift = 0; ; shift += 7) {
      byte b = buffer.get();
      value |= (b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        return value;
      }
    }
  }

  private static byte[] readFrame(DataInputStream in) throws IOException {
    int size = in.readInt();
    if (size < 0) {
      throw new EOFException("negative frame size " + size);
    }
    byte[] frame = new byte[size];
    in.readFully(frame);
    return frame;
  }

  private static void writeFrame(DataOutputStream out, byte[] frame) throws IOException {
    synchronized (out) {
      out.writeInt(frame.length);
      out.write(frame);
      out.flush();
    }
  }

  private static void close(Socket a, Socket b) {
    try {
      a.close();
    } catch (IOException ignored) {
      // closing anyway
    }
    try {
      b.close();
    } catch (IOException ignored) {
      // closing anyway
    }
  }

  private static void daemon(String name, Runnable body) {
    Thread t = new Thread(body, name);
    t.setDaemon(true);
    t.start();
  }
}
