/*
 * ConnectionSettings without a gateway: the bearer token reaches the server
 * as `authorization: Bearer <token>` over a real (loopback, plaintext)
 * HTTP/2 connection, and settings that cannot work are refused up front
 * with a message naming the fix. TLS itself is tested against the TLS
 * gateway (GatewayRoundTripTest).
 */
package dev.kafkagateway.example;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import io.grpc.Metadata;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import kafka_gateway.v1.ProducerOuterClass.Record;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(60)
class ConnectionSettingsTest {
  static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  @Test
  void theTokenTravelsAsABearerAuthorizationHeader() throws Exception {
    try (FakeGateway fake = new FakeGateway((stream, batch) -> stream.ack(batch), false, true)) {
      ConnectionSettings settings =
          ConnectionSettings.fromEnvironment(
              "http://" + fake.target(), Map.of(ConnectionSettings.ENV_TOKEN, "s3cret-key"));
      try (GatewayProducer producer = GatewayProducer.newBuilder(settings).build()) {
        producer.send("t", List.of(Record.newBuilder().setValue(ByteString.copyFromUtf8("v")).build()))
            .get(30, TimeUnit.SECONDS);
      }
      try (GatewayProducer producer =
          GatewayProducer.newBuilder(ConnectionSettings.plaintext(fake.target())).build()) {
        producer.send("t", List.of(Record.newBuilder().build())).get(30, TimeUnit.SECONDS);
      }
      assertEquals("Bearer s3cret-key", fake.streams.get(0).headers.get(AUTHORIZATION));
      assertNull(fake.streams.get(1).headers.get(AUTHORIZATION), "no token, no header");
      assertTrue(!settings.toString().contains("s3cret"), "the token stays out of toString: " + settings);
    }
  }

  @Test
  void settingsThatCannotWorkAreRefusedSayingWhy() {
    Path pem = Path.of("ca.pem");
    var plaintextWithCa =
        assertThrows(
            IllegalArgumentException.class,
            () -> new ConnectionSettings("127.0.0.1:50051", pem, null, null, null, null));
    assertTrue(plaintextWithCa.getMessage().contains("https://"), plaintextWithCa.getMessage());
    var certWithoutKey =
        assertThrows(
            IllegalArgumentException.class,
            () -> new ConnectionSettings("https://gw:443", pem, pem, null, null, null));
    assertTrue(certWithoutKey.getMessage().contains("give both"), certWithoutKey.getMessage());
    var noTarget =
        assertThrows(IllegalArgumentException.class, () -> ConnectionSettings.plaintext(" "));
    assertTrue(noTarget.getMessage().contains("HOST:PORT"), noTarget.getMessage());
    assertEquals("gw:443", new ConnectionSettings("https://gw:443", null, null, null, null, null).address());
  }
}
