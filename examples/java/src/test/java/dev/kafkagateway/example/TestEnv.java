/*
 * What the tests against a running gateway read from the environment, and
 * the rule for what is missing: under CI (CI=true) a missing variable fails
 * the test, elsewhere it aborts it (JUnit reports it skipped, with the
 * reason). .ci/java-client.sh sets them all; see README.md.
 *
 *   KAFKA_GATEWAY_TARGET         HOST:PORT of a plaintext gateway
 *   KAFKA_BOOTSTRAP_SERVERS      the Kafka it produces to; records are read back from there
 *   KAFKA_TEST_TOPIC             an existing topic for the round trips; unset: a new one is created
 *   KAFKA_TEST_TLS_TARGET        https://HOST:PORT of a gateway on the same Kafka that requires
 *                                a client certificate and an API key and stamps the principal
 *   KAFKA_TEST_TLS_CA, KAFKA_TEST_TLS_CLIENT_CERT, KAFKA_TEST_TLS_CLIENT_KEY,
 *   KAFKA_TEST_TOKEN, KAFKA_TEST_PRINCIPAL, KAFKA_TEST_PRINCIPAL_HEADER
 *                                its CA, a client certificate and key, an API key, the key's
 *                                principal and the header the gateway stamps it into
 */
package dev.kafkagateway.example;

import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Assumptions;

final class TestEnv {
  static final boolean CI = "true".equals(System.getenv("CI"));

  private TestEnv() {}

  /** The plaintext gateway's address. */
  static String target() {
    return required("KAFKA_GATEWAY_TARGET", "a running gateway", GATEWAY_HINT);
  }

  /** The Kafka the gateways produce to. */
  static String bootstrapServers() {
    return required("KAFKA_BOOTSTRAP_SERVERS", "the Kafka the gateway produces to", GATEWAY_HINT);
  }

  /** KAFKA_TEST_TOPIC, or null. */
  static String givenTopic() {
    String topic = System.getenv("KAFKA_TEST_TOPIC");
    return topic == null || topic.isBlank() ? null : topic;
  }

  /** The TLS gateway's settings: required under CI, the test aborted elsewhere when KAFKA_TEST_TLS_TARGET is unset. */
  static Tls tls() {
    String target =
        required(
            "KAFKA_TEST_TLS_TARGET",
            "a gateway serving TLS with client certificates and API keys",
            "run the tests the way .ci/clients.sh runs the other examples: it starts that gateway");
    // Once a TLS gateway is named, the rest must be there, CI or not.
    return new Tls(
        new ConnectionSettings(
            target,
            file("KAFKA_TEST_TLS_CA"),
            file("KAFKA_TEST_TLS_CLIENT_CERT"),
            file("KAFKA_TEST_TLS_CLIENT_KEY"),
            null,
            set("KAFKA_TEST_TOKEN")),
        set("KAFKA_TEST_PRINCIPAL"),
        set("KAFKA_TEST_PRINCIPAL_HEADER"));
  }

  /** A TLS gateway, and the header it stamps each record with. */
  record Tls(ConnectionSettings settings, String principal, String principalHeader) {}

  private static final String GATEWAY_HINT =
      "run bash .ci/java-client.sh, which starts a gateway, or see examples/java/README.md";

  private static String required(String name, String what, String hint) {
    String value = System.getenv(name);
    if (value == null || value.isBlank()) {
      String why = name + " is not set (" + what + "): " + hint;
      if (CI) {
        fail(why + "; under CI=true nothing may be skipped");
      }
      Assumptions.abort(why);
    }
    return value;
  }

  private static String set(String name) {
    String value = System.getenv(name);
    if (value == null || value.isBlank()) {
      fail(name + " must be set when KAFKA_TEST_TLS_TARGET is (see TestEnv)");
    }
    return value;
  }

  private static Path file(String name) {
    Path path = Path.of(set(name));
    if (!Files.isReadable(path)) {
      fail(name + "=" + path + ": no such readable file");
    }
    return path;
  }
}
