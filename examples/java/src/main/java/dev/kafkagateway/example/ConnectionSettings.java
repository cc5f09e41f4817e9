/*
 * Where the gateway is and how to reach it: the target, TLS files and a
 * bearer token, as `kafka-gateway produce` and the other examples take them.
 * TARGET is HOST:PORT or http://HOST:PORT for plaintext HTTP/2, and
 * https://HOST:PORT for TLS, verified against a CA file (default: the JVM's
 * trusted roots), with an optional client certificate and key (PEM; the key
 * PKCS#8, as `openssl req -newkey ... -nodes` writes it). The token is sent
 * as `authorization: Bearer <token>` on every call; over plaintext it
 * travels in the clear.
 */
package dev.kafkagateway.example;

import io.grpc.CallCredentials;
import io.grpc.ChannelCredentials;
import io.grpc.CompositeChannelCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.TlsChannelCredentials;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.Executor;

/**
 * How to reach a gateway. {@code ca}, {@code clientCert}, {@code clientKey}, {@code serverName}
 * and {@code token} may be null.
 */
public record ConnectionSettings(
    String target, Path ca, Path clientCert, Path clientKey, String serverName, String token) {

  /** The variables `kafka-gateway produce` reads, with the files they name. */
  public static final String ENV_CA = "KAFKA_GATEWAY_CA";
  public static final String ENV_CLIENT_CERT = "KAFKA_GATEWAY_CLIENT_CERT";
  public static final String ENV_CLIENT_KEY = "KAFKA_GATEWAY_CLIENT_KEY";
  public static final String ENV_TLS_SERVER_NAME = "KAFKA_GATEWAY_TLS_SERVER_NAME";
  public static final String ENV_TOKEN = "KAFKA_GATEWAY_TOKEN";

  public ConnectionSettings {
    if (target == null || target.isBlank()) {
      throw new IllegalArgumentException("no target: give HOST:PORT, http://HOST:PORT or https://HOST:PORT");
    }
    if ((clientCert == null) != (clientKey == null)) {
      throw new IllegalArgumentException("a client certificate needs its key: give both, or neither");
    }
    if (!target.startsWith("https://") && (ca != null || clientCert != null || serverName != null)) {
      throw new IllegalArgumentException(
          "TLS settings need an https:// target, not " + target);
    }
  }

  /** Plaintext to {@code target}, no token. */
  public static ConnectionSettings plaintext(String target) {
    return new ConnectionSettings(target, null, null, null, null, null);
  }

  /** {@code target} with the TLS files and token that KAFKA_GATEWAY_* variables name, if set. */
  public static ConnectionSettings fromEnvironment(String target, Map<String, String> env) {
    return new ConnectionSettings(
        target,
        path(env.get(ENV_CA)),
        path(env.get(ENV_CLIENT_CERT)),
        path(env.get(ENV_CLIENT_KEY)),
        blankToNull(env.get(ENV_TLS_SERVER_NAME)),
        blankToNull(env.get(ENV_TOKEN)));
  }

  /** The same settings with another token (null: none). */
  public ConnectionSettings withToken(String newToken) {
    return new ConnectionSettings(target, ca, clientCert, clientKey, serverName, newToken);
  }

  public boolean isTls() {
    return target.startsWith("https://");
  }

  /** HOST:PORT, without the scheme: the form grpc-java's default name resolver takes. */
  public String address() {
    return target.replaceFirst("^https?://", "");
  }

  /** A new channel to the gateway; the caller shuts it down. */
  public ManagedChannel openChannel() {
    ChannelCredentials credentials;
    if (isTls()) {
      TlsChannelCredentials.Builder tls = TlsChannelCredentials.newBuilder();
      try {
        if (ca != null) {
          tls.trustManager(ca.toFile());
        }
        if (clientCert != null) {
          tls.keyManager(clientCert.toFile(), clientKey.toFile());
        }
      } catch (IOException | IllegalArgumentException e) {
        throw new UncheckedIOException(
            new IOException(
                "cannot load the TLS files (CA " + ca + ", client certificate " + clientCert
                    + ", key " + clientKey + "; PEM, the key in PKCS#8): " + e.getMessage(),
                e));
      }
      credentials = tls.build();
    } else {
      credentials = InsecureChannelCredentials.create();
    }
    if (token != null) {
      credentials = CompositeChannelCredentials.create(credentials, new BearerToken(token));
    }
    ManagedChannelBuilder<?> builder = Grpc.newChannelBuilder(address(), credentials);
    if (serverName != null) {
      builder.overrideAuthority(serverName);
    }
    return builder.build();
  }

  @Override
  public String toString() {
    // The token stays out of logs.
    return "ConnectionSettings[target=" + target + ", ca=" + ca + ", clientCert=" + clientCert
        + ", serverName=" + serverName + ", token=" + (token == null ? "none" : "set") + "]";
  }

  private static Path path(String value) {
    return value == null || value.isBlank() ? null : Path.of(value);
  }

  private static String blankToNull(String value) {
    return value == null || value.isBlank() ? null : value;
  }

  /** `authorization: Bearer <token>` on every call: an API key or a JWT. */
  static final class BearerToken extends CallCredentials {
    private static final Metadata.Key<String> AUTHORIZATION =
        Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
    private final String token;

    BearerToken(String token) {
      this.token = token;
    }

    @Override
    public void applyRequestMetadata(
        RequestInfo requestInfo, Executor appExecutor, MetadataApplier applier) {
      try {
        Metadata headers = new Metadata();
        headers.put(AUTHORIZATION, "Bearer " + token);
        applier.apply(headers);
      } catch (IllegalArgumentException e) {
        applier.fail(
            Status.UNAUTHENTICATED
                .withDescription("the token cannot travel in a header (printable ASCII only)")
                .withCause(e));
      }
    }
  }
}
