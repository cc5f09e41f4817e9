// Tests of the client against an in-process fake gateway (a Producer server
// on a bufconn listener) whose streams follow a plan: answer some batches,
// then end with a status. They prove the reconnect-and-resend contract
// (exactly the unanswered batches are sent again, in order; the caller sees
// every answer once, in order), that reconnecting is bounded and only
// follows UNAVAILABLE and RESOURCE_EXHAUSTED, that the caller's trace
// context reaches the gateway as a W3C traceparent, and that unsafe or
// incomplete options are refused. No gateway or Kafka is needed.

package producer_test

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	pb "kafka-gateway/examples/go/gen/kafkagatewayv1"
	"kafka-gateway/examples/go/producer"
)

// plan is what one stream of the fake gateway does: it answers the first
// answer batches it reads, and once it has read reads batches (at once when
// reads is 0) it ends with end. A nil end answers every batch until the
// client half-closes.
type plan struct {
	answer, reads int
	end           error
}

// fakeGateway serves Produce by plans, one per stream in order (the last one
// repeats), and records what each stream read.
type fakeGateway struct {
	pb.UnimplementedProducerServer
	plans []plan

	mu sync.Mutex
	// read: the batch ids each stream read, in order.
	read [][]uint64
	// traceparents: each stream's traceparent metadata.
	traceparents []string
	offset       int64
}

func (f *fakeGateway) Produce(stream pb.Producer_ProduceServer) error {
	f.mu.Lock()
	n := len(f.read)
	f.read = append(f.read, nil)
	md, _ := metadata.FromIncomingContext(stream.Context())
	f.traceparents = append(f.traceparents, strings.Join(md.Get("traceparent"), ","))
	p := f.plans[min(n, len(f.plans)-1)]
	f.mu.Unlock()

	if p.end != nil && p.reads == 0 {
		return p.end
	}
	for count := 1; ; count++ {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.read[n] = append(f.read[n], req.GetBatchId())
		resp := &pb.ProduceResponse{BatchId: req.GetBatchId()}
		for range req.GetRecords() {
			resp.Results = append(resp.Results, &pb.RecordResult{Result: &pb.RecordResult_Ok{
				Ok: &pb.RecordMetadata{Topic: req.GetTopic(), Partition: 0, Offset: f.offset, TimestampMs: -1},
			}})
			f.offset++
		}
		f.mu.Unlock()
		if p.end == nil || count <= p.answer {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		if p.end != nil && count == p.reads {
			return p.end
		}
	}
}

func (f *fakeGateway) streams() [][]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]uint64(nil), f.read...)
}

// serve starts f on a bufconn listener and returns a client of it with opts.
func serve(t *testing.T, f *fakeGateway, opts ...producer.Option) *producer.Client {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	pb.RegisterProducerServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	dial := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) })
	client, err := producer.New("passthrough:///fake-gateway", append([]producer.Option{producer.WithDialOptions(dial)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// batches are n batches of one record each, with ids 1..n.
func batches(n int) []*pb.ProduceRequest {
	var out []*pb.ProduceRequest
	for i := 1; i <= n; i++ {
		out = append(out, &pb.ProduceRequest{BatchId: uint64(i), Topic: "t", Records: []*pb.Record{{Value: []byte{byte(i)}}}})
	}
	return out
}

func ids(results []*producer.Result) []uint64 {
	var out []uint64
	for _, r := range results {
		out = append(out, r.Response.GetBatchId())
	}
	return out
}

func seq(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReconnectResendsOnlyUnansweredBatchesInOrder(t *testing.T) {
	f := &fakeGateway{plans: []plan{
		// Answers batches 1 and 2, reads 3 and 4, and leaves.
		{answer: 2, reads: 4, end: status.Error(codes.Unavailable, "the gateway is shutting down")},
		// Refuses the next stream outright.
		{end: status.Error(codes.ResourceExhausted, "too many streams: raise --max-streams")},
		// Answers everything.
		{},
	}}
	client := serve(t, f, producer.WithMaxInFlight(6), producer.WithReconnect(3, time.Millisecond, 10*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 12
	results := sendAll(t, ctx, client, batches(n))

	if got := ids(results); !equal(got, seq(1, n)) {
		t.Fatalf("the caller got answers to batches %v, want each of 1..%d once, in order", got, n)
	}
	for _, r := range results {
		if len(r.Response.GetResults()) != 1 || r.Response.GetResults()[0].GetOk() == nil || r.Request.GetBatchId() != r.Response.GetBatchId() {
			t.Fatalf("batch %d: request and response do not match: %v", r.Request.GetBatchId(), r.Response)
		}
	}
	streams := f.streams()
	if len(streams) != 3 {
		t.Fatalf("the gateway saw %d streams %v, want 3", len(streams), streams)
	}
	if !equal(streams[0], seq(1, 4)) {
		t.Fatalf("the first stream read %v, want batches 1..4", streams[0])
	}
	// The refused stream may have read nothing; whatever it read was
	// unanswered and must come again.
	if !equal(streams[2], seq(3, n)) {
		t.Fatalf("the last stream read %v, want exactly the unanswered batches 3..%d, in order", streams[2], n)
	}
	t.Logf("streams read %v; the caller got %v", streams, ids(results))
}

func TestReconnectIsBoundedAndOnlyForUnavailableOrResourceExhausted(t *testing.T) {
	cases := []struct {
		name    string
		end     error
		streams int
		says    string
	}{
		{"UNAVAILABLE: 1 + 2 attempts, then the error", status.Error(codes.Unavailable, "gone"), 3, "giving up after 2 new streams"},
		{"RESOURCE_EXHAUSTED: 1 + 2 attempts, then the error", status.Error(codes.ResourceExhausted, "full"), 3, "giving up after 2 new streams"},
		{"INVALID_ARGUMENT: no new stream", status.Error(codes.InvalidArgument, "malformed"), 1, "malformed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Every stream reads one batch, answers none and ends.
			f := &fakeGateway{plans: []plan{{reads: 1, end: c.end}}}
			client := serve(t, f, producer.WithReconnect(2, time.Millisecond, 5*time.Millisecond))
			stream, err := client.Produce(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			if err := stream.Send(batches(1)[0]); err != nil {
				t.Fatal(err)
			}
			stream.CloseSend()
			res, err := stream.Recv()
			if res != nil || status.Code(err) != status.Code(c.end) || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("Recv: %v, %v; want no result and %v saying %q", res, err, status.Code(c.end), c.says)
			}
			if got := len(f.streams()); got != c.streams {
				t.Fatalf("%d streams opened, want %d", got, c.streams)
			}
			if err := stream.Send(batches(1)[0]); err == nil {
				t.Fatal("Send after the stream failed returned no error")
			}
			t.Logf("after %d streams: %v", c.streams, err)
		})
	}
}

func TestTraceContextReachesTheGateway(t *testing.T) {
	recorder := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
		_ = tp.Shutdown(context.Background())
	})

	f := &fakeGateway{plans: []plan{{}}}
	client := serve(t, f)
	ctx, caller := tp.Tracer("kafka-gateway-go-example").Start(context.Background(), "caller")
	results := sendAll(t, ctx, client, batches(2))
	caller.End()
	if len(results) != 2 {
		t.Fatalf("%d results, want 2", len(results))
	}

	// traceparent: 00-<trace id>-<parent span id>-<flags>
	parts := strings.Split(f.traceparents[0], "-")
	if len(parts) != 4 || parts[0] != "00" {
		t.Fatalf("the gateway got traceparent %q, want 00-<trace id>-<span id>-<flags>", f.traceparents[0])
	}
	want := caller.SpanContext().TraceID().String()
	if parts[1] != want {
		t.Fatalf("traceparent %q carries trace id %s, want the caller's %s", f.traceparents[0], parts[1], want)
	}
	// Its parent is the client span of the stream, a child of the caller's.
	var rpc sdktrace.ReadOnlySpan
	for _, s := range recorder.Ended() {
		if s.SpanContext().SpanID().String() == parts[2] {
			rpc = s
		}
	}
	if rpc == nil {
		t.Fatalf("no client span has id %s, the traceparent's parent", parts[2])
	}
	if rpc.SpanKind() != trace.SpanKindClient || rpc.Parent().SpanID() != caller.SpanContext().SpanID() {
		t.Fatalf("span %q (%v) has parent %s, want a client span under the caller's %s",
			rpc.Name(), rpc.SpanKind(), rpc.Parent().SpanID(), caller.SpanContext().SpanID())
	}
	t.Logf("traceparent %s: client span %q under the caller's span", f.traceparents[0], rpc.Name())
}

func TestOptionsRefuseUnsafeOrIncompleteSettings(t *testing.T) {
	cases := map[string][]producer.Option{
		"a token over plaintext":               {producer.WithToken("secret")},
		"a client certificate without its key": {producer.WithTLSFiles("", "client.pem", "")},
		"a CA file that does not exist":        {producer.WithTLSFiles("/nonexistent/ca.pem", "", "")},
		"no batch in flight":                   {producer.WithMaxInFlight(0)},
		"a backoff that shrinks":               {producer.WithReconnect(3, time.Second, time.Millisecond)},
	}
	for name, opts := range cases {
		if _, err := producer.New("127.0.0.1:1", opts...); err == nil {
			t.Errorf("New accepted %s", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if _, err := producer.New("http://127.0.0.1:1", producer.WithTLSFiles("", "", "")); err == nil {
		t.Error("New accepted TLS settings for an http:// target")
	}
	if _, err := producer.New("https://127.0.0.1:1", producer.WithToken("secret")); err != nil {
		t.Errorf("New refused a token over https://: %v", err)
	}
}
