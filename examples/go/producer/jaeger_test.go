// The trace of a produce, seen in Jaeger: the test's tracer provider exports
// over OTLP/gRPC to OTEL_EXPORTER_OTLP_ENDPOINT as service
// kafka-gateway-go-example; under one span it produces two batches through
// KAFKA_GATEWAY_TARGET, a gateway exporting to the same endpoint as service
// kafka-gateway; then it asks Jaeger's query API (JAEGER_QUERY_URL, e.g.
// http://127.0.0.1:16686) for the trace until it holds the test's span and a
// span of the gateway whose parent chain reaches it. Only the structure is
// checked (services, parent links), not the gateway's span names.
//
// Needs JAEGER_QUERY_URL, OTEL_EXPORTER_OTLP_ENDPOINT, KAFKA_GATEWAY_TARGET
// and KAFKA_BOOTSTRAP_SERVERS; skips without them, and fails without them
// when CI=true and KAFKA_TEST_JAEGER=1.

package producer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"kafka-gateway/examples/go/internal/kafkatest"
	"kafka-gateway/examples/go/producer"
)

const (
	// exampleService is this client's service name in Jaeger.
	exampleService = "kafka-gateway-go-example"
	// gatewayService is the service name the gateway is started with
	// (OTEL_SERVICE_NAME).
	gatewayService = "kafka-gateway"
	// jaegerWait bounds the wait for both services' spans: the gateway
	// exports in batches, every few seconds.
	jaegerWait = 30 * time.Second
)

// jaegerTrace is the part of Jaeger's GET /api/traces/{id} answer read here.
type jaegerTrace struct {
	Spans []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		References    []struct {
			RefType string `json:"refType"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

func TestTraceSeenInJaeger(t *testing.T) {
	required := kafkatest.InCI && os.Getenv("KAFKA_TEST_JAEGER") == "1"
	env := kafkatest.NeedIf(t, required, "the trace in Jaeger", "JAEGER_QUERY_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "KAFKA_GATEWAY_TARGET", "KAFKA_BOOTSTRAP_SERVERS")
	jaeger, endpoint, target, bootstrap := strings.TrimSuffix(env[0], "/"), env[1], env[2], env[3]
	topic := kafkatest.Topic(t, bootstrap, "traced")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT itself (http:// means
	// no TLS), as any OpenTelemetry SDK does.
	exporter, err := otlptracegrpc.New(ctx)
	if err != nil {
		t.Fatalf("OTLP exporter for %s: %v", endpoint, err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exporter),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", exampleService))),
	)
	defer func() { _ = tp.Shutdown(context.Background()) }()
	client, err := producer.New(target, producer.WithTelemetry(
		otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(propagation.TraceContext{})))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	spanCtx, span := tp.Tracer(exampleService).Start(ctx, "produce two batches")
	results := sendAll(t, spanCtx, client, richBatches(topic, 300)[:2])
	span.End()
	traceID := span.SpanContext().TraceID().String()
	rootID := span.SpanContext().SpanID().String()
	// The records carry the trace too: the gateway's traceparent header.
	var stored []kafkatest.Stored
	for _, r := range results {
		for i, res := range r.Response.GetResults() {
			if res.GetOk() == nil {
				t.Fatalf("batch %d record %d: %v", r.Response.GetBatchId(), i, res.GetError())
			}
			record := r.Request.GetRecords()[i]
			stored = append(stored, kafkatest.Stored{Partition: res.GetOk().GetPartition(), Offset: res.GetOk().GetOffset(),
				Record: record, Headers: record.GetHeaders(), TraceID: traceID})
		}
	}
	kafkatest.ReadBack(t, bootstrap, topic, stored)
	if err := tp.ForceFlush(ctx); err != nil {
		t.Fatalf("flushing spans to %s: %v", endpoint, err)
	}
	t.Logf("trace %s: span %s; waiting for Jaeger at %s to hold it with a %s span under it", traceID, rootID, jaeger, gatewayService)

	deadline := time.Now().Add(jaegerWait)
	var last string
	for {
		tr, err := fetchTrace(ctx, jaeger, traceID)
		if err == nil {
			var ok bool
			ok, last = underRoot(tr, rootID)
			if ok {
				t.Log(last)
				return
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, trace %s in Jaeger: %s", jaegerWait, traceID, last)
		}
		time.Sleep(time.Second)
	}
}

// fetchTrace asks Jaeger's query API for one trace.
func fetchTrace(ctx context.Context, jaeger, traceID string) (*jaegerTrace, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jaeger+"/api/traces/"+traceID, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("Jaeger's query API did not answer (is JAEGER_QUERY_URL right?): %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s %s", req.URL, resp.Status, strings.TrimSpace(string(body)))
	}
	var answer struct {
		Data []jaegerTrace `json:"data"`
	}
	if err := json.Unmarshal(body, &answer); err != nil || len(answer.Data) != 1 {
		return nil, fmt.Errorf("GET %s: want one trace, got %.300s (%v)", req.URL, body, err)
	}
	return &answer.Data[0], nil
}

// underRoot: tr holds the span rootID of exampleService and a span of
// gatewayService whose chain of CHILD_OF references reaches rootID. It also
// says what it found.
func underRoot(tr *jaegerTrace, rootID string) (bool, string) {
	service := map[string]string{}
	parent := map[string]string{}
	for _, s := range tr.Spans {
		service[s.SpanID] = tr.Processes[s.ProcessID].ServiceName
		for _, ref := range s.References {
			if ref.RefType == "CHILD_OF" {
				parent[s.SpanID] = ref.SpanID
			}
		}
	}
	counts := map[string]int{}
	for _, s := range tr.Spans {
		counts[service[s.SpanID]]++
	}
	found := fmt.Sprintf("%d spans by service %v", len(tr.Spans), counts)
	if service[rootID] != exampleService {
		return false, found + fmt.Sprintf("; the test's span %s of %s is not there yet", rootID, exampleService)
	}
	for _, s := range tr.Spans {
		if service[s.SpanID] != gatewayService {
			continue
		}
		chain := []string{fmt.Sprintf("%s %q", gatewayService, s.OperationName)}
		for id, hops := parent[s.SpanID], 0; id != "" && hops < len(tr.Spans); id, hops = parent[id], hops+1 {
			chain = append(chain, service[id]+" "+id)
			if id == rootID {
				return true, found + "; parent chain: " + strings.Join(chain, " -> ")
			}
		}
	}
	return false, found + fmt.Sprintf("; no %s span whose parent chain reaches the test's span %s", gatewayService, rootID)
}
