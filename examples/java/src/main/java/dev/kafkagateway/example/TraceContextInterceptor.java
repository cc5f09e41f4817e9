/*
 * Puts the current OpenTelemetry context on every call's metadata, so the
 * gateway's spans continue the caller's trace: with the default propagator,
 * the W3C `traceparent` (and `tracestate`) headers. Nothing is added when
 * there is no valid span context (no tracing set up, or no span current).
 */
package dev.kafkagateway.example;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall.SimpleForwardingClientCall;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.opentelemetry.context.Context;
import io.opentelemetry.context.propagation.TextMapPropagator;
import io.opentelemetry.context.propagation.TextMapSetter;

/** A ClientInterceptor injecting the OpenTelemetry context current when a call starts. */
public final class TraceContextInterceptor implements ClientInterceptor {
  private static final TextMapSetter<Metadata> SETTER =
      (metadata, key, value) ->
          metadata.put(Metadata.Key.of(key, Metadata.ASCII_STRING_MARSHALLER), value);

  private final TextMapPropagator propagator;

  public TraceContextInterceptor(TextMapPropagator propagator) {
    this.propagator = propagator;
  }

  @Override
  public <ReqT, RespT> ClientCall<ReqT, RespT> interceptCall(
      MethodDescriptor<ReqT, RespT> method, CallOptions callOptions, Channel next) {
    return new SimpleForwardingClientCall<>(next.newCall(method, callOptions)) {
      @Override
      public void start(Listener<RespT> responseListener, Metadata headers) {
        // start() runs on the thread that opens the call, in its context.
        propagator.inject(Context.current(), headers, SETTER);
        super.start(responseListener, headers);
      }
    };
  }
}
