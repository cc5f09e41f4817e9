// Package kafkatest holds what this module's tests against a running
// gateway share: the environment they read, a topic to produce to (created
// with franz-go's admin client unless KAFKA_TEST_TOPIC names one), and the
// read-back of acknowledged records from Kafka with franz-go, compared with
// what was sent. Only tests import it.
//
// The environment, as .ci/go-client.sh and .ci/clients.sh set it:
//
//	KAFKA_GATEWAY_TARGET     a plaintext gateway (HOST:PORT)
//	KAFKA_BOOTSTRAP_SERVERS  the Kafka it produces to, to read records back
//	KAFKA_TEST_TOPIC         an existing topic; otherwise each test creates one
//	KAFKA_TEST_TLS_TARGET    a gateway serving TLS (https://HOST:PORT) that
//	                         requires a client certificate and an API key and
//	                         stamps the principal into a header, with
//	KAFKA_TEST_TLS_CA, KAFKA_TEST_TLS_CLIENT_CERT, KAFKA_TEST_TLS_CLIENT_KEY,
//	KAFKA_TEST_TOKEN, KAFKA_TEST_PRINCIPAL, KAFKA_TEST_PRINCIPAL_HEADER
//	JAEGER_QUERY_URL, OTEL_EXPORTER_OTLP_ENDPOINT, KAFKA_TEST_JAEGER
//	                         see producer/jaeger_test.go
//
// A test whose variables are missing skips, saying which; with CI=true it
// fails instead.
package kafkatest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	pb "kafka-gateway/examples/go/gen/kafkagatewayv1"
)

// InCI is CI=true, where a missing prerequisite fails the test.
var InCI = os.Getenv("CI") == "true"

// Need returns the named variables, or ends the test: a failure under CI, a
// skip naming them elsewhere.
func Need(t testing.TB, why string, names ...string) []string {
	t.Helper()
	return NeedIf(t, InCI, why, names...)
}

// NeedIf returns the named variables, or ends the test: a failure when
// required, a skip naming them otherwise.
func NeedIf(t testing.TB, required bool, why string, names ...string) []string {
	t.Helper()
	values := make([]string, len(names))
	var missing []string
	for i, name := range names {
		values[i] = os.Getenv(name)
		if values[i] == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("%s needs %s (see internal/kafkatest; .ci/go-client.sh sets them)", why, strings.Join(missing, ", "))
		if required {
			t.Fatal(msg + ": required here (CI=true), so this is a failure, not a skip")
		}
		t.Skip(msg)
	}
	return values
}

// NewKafkaClient is a franz-go client of bootstrap with opts. It asks
// ApiVersions at version 2 at most: librdkafka's mock cluster, the gateway's
// embedded broker, answers versions 0 to 2 only, and its UNSUPPORTED_VERSION
// answer to a newer request is one franz-go cannot read ("unable to read
// ApiVersions response"). Every Kafka since 0.11 answers version 2, and its
// answer lets franz-go choose every other request's version as usual.
func NewKafkaClient(t testing.TB, bootstrap string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	versions := kversion.Stable()
	versions.SetMaxKeyVersion(kmsg.ApiVersions.Int16(), 2)
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(strings.Split(bootstrap, ",")...), kgo.MaxVersions(versions)}, opts...)...)
	if err != nil {
		t.Fatalf("franz-go client for %s: %v", bootstrap, err)
	}
	return cl
}

// Topic returns KAFKA_TEST_TOPIC, or a new topic with 3 partitions created
// through the admin API on bootstrap: a real broker may not create topics
// on first use. A broker without CreateTopics (the gateway's embedded one)
// creates it on first use instead.
func Topic(t testing.TB, bootstrap, name string) string {
	t.Helper()
	if topic := os.Getenv("KAFKA_TEST_TOPIC"); topic != "" {
		return topic
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	topic := fmt.Sprintf("kafka-gateway-go-%s-%s", name, hex.EncodeToString(suffix))
	cl := NewKafkaClient(t, bootstrap)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := kadm.NewClient(cl)
	brokers, err := admin.ApiVersions(ctx)
	if err != nil {
		t.Fatalf("asking %s for its API versions: %v", bootstrap, err)
	}
	canCreate := false
	brokers.Each(func(b kadm.BrokerApiVersions) {
		if _, ok := b.KeyMaxVersion(kmsg.CreateTopics.Int16()); ok && b.Err == nil {
			canCreate = true
		}
	})
	if !canCreate {
		t.Logf("%s offers no CreateTopics (librdkafka's mock cluster, the gateway's embedded broker): topic %s is created on first use", bootstrap, topic)
		return topic
	}
	// Replication factor -1: the broker's default.
	if _, err := admin.CreateTopic(ctx, 3, -1, nil, topic); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		t.Fatalf("creating topic %s with 3 partitions on %s: %v (or set KAFKA_TEST_TOPIC to an existing topic)", topic, bootstrap, err)
	}
	t.Logf("created topic %s (3 partitions) on %s", topic, bootstrap)
	return topic
}

// Stored is a record as Kafka should hold it.
type Stored struct {
	Partition int32
	Offset    int64
	// Record is the record as sent: its key, value and timestamp.
	Record *pb.Record
	// Headers are the record's own, then those the gateway stamps.
	Headers []*pb.Header
	// TraceID, when set, is the trace the record's `traceparent` header must
	// belong to. A gateway that traces (OTEL_EXPORTER_OTLP_ENDPOINT set)
	// adds that header after all others, pointing at its span of the batch;
	// one that does not adds none.
	TraceID string
}

// traceparent is a W3C traceparent: version 00, trace id, span id, flags.
var traceparent = regexp.MustCompile(`^00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$`)

// ReadBack reads want's records from topic on bootstrap with franz-go and
// compares partition, offset, key (null stays null, empty stays empty),
// value (likewise), headers in order, and the timestamp where the record
// set one.
func ReadBack(t testing.TB, bootstrap, topic string, want []Stored) {
	t.Helper()
	if len(want) == 0 {
		t.Fatal("ReadBack: no record to read back")
	}
	from := map[int32]kgo.Offset{}
	first := map[int32]int64{}
	for _, w := range want {
		if o, seen := first[w.Partition]; !seen || w.Offset < o {
			first[w.Partition] = w.Offset
		}
	}
	for p, o := range first {
		from[p] = kgo.NewOffset().At(o)
	}
	cl := NewKafkaClient(t, bootstrap, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}))
	defer cl.Close()

	type place struct {
		partition int32
		offset    int64
	}
	got := map[place]*kgo.Record{}
	missing := func() int {
		n := 0
		for _, w := range want {
			if got[place{w.Partition, w.Offset}] == nil {
				n++
			}
		}
		return n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for missing() > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read back %d of %d acked records from %s in 60 s; the rest never came", len(want)-missing(), len(want), topic)
		}
		for _, fe := range fetches.Errors() {
			t.Fatalf("fetching %s partition %d: %v", fe.Topic, fe.Partition, fe.Err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			got[place{r.Partition, r.Offset}] = r
		})
	}
	traced := 0
	for _, w := range want {
		r := got[place{w.Partition, w.Offset}]
		where := fmt.Sprintf("%s/%d@%d", topic, w.Partition, w.Offset)
		headers := r.Headers
		if n := len(headers); n == len(w.Headers)+1 && headers[n-1].Key == "traceparent" {
			m := traceparent.FindSubmatch(headers[n-1].Value)
			switch {
			case m == nil:
				t.Errorf("%s: the gateway's traceparent header %q is no W3C traceparent", where, headers[n-1].Value)
			case w.TraceID != "" && string(m[1]) != w.TraceID:
				t.Errorf("%s: traceparent %s is not of the producer's trace %s", where, headers[n-1].Value, w.TraceID)
			}
			headers = headers[:n-1]
			traced++
		} else if w.TraceID != "" {
			t.Errorf("%s: no traceparent header of trace %s after the record's own: headers %v", where, w.TraceID, headers)
		}
		if !sameBytes(r.Key, w.Record.Key) {
			t.Errorf("%s: key %s, acked record's key %s", where, show(r.Key), show(w.Record.Key))
		}
		if !sameBytes(r.Value, w.Record.Value) {
			t.Errorf("%s: value %s, acked record's value %s", where, show(r.Value), show(w.Record.Value))
		}
		if len(headers) != len(w.Headers) {
			t.Errorf("%s: %d headers %s, want %d %v", where, len(headers), showHeaders(headers), len(w.Headers), w.Headers)
		} else {
			for i, h := range w.Headers {
				if headers[i].Key != h.GetKey() || !bytes.Equal(headers[i].Value, h.GetValue()) {
					t.Errorf("%s: header %d is %s=%q, want %s=%q", where, i, headers[i].Key, headers[i].Value, h.GetKey(), h.GetValue())
				}
			}
		}
		if w.Record.TimestampMs != nil && r.Timestamp.UnixMilli() != w.Record.GetTimestampMs() {
			t.Errorf("%s: timestamp %d, want %d", where, r.Timestamp.UnixMilli(), w.Record.GetTimestampMs())
		}
	}
	if !t.Failed() {
		t.Logf("read back %d records from %s with franz-go: keys, values, headers, partitions, offsets as acked (%d with the gateway's traceparent)", len(want), topic, traced)
	}
}

// sameBytes: equal, and null only where the other is null.
func sameBytes(a, b []byte) bool {
	return (a == nil) == (b == nil) && bytes.Equal(a, b)
}

func showHeaders(headers []kgo.RecordHeader) string {
	parts := make([]string, len(headers))
	for i, h := range headers {
		parts[i] = fmt.Sprintf("%s=%q", h.Key, h.Value)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func show(b []byte) string {
	if b == nil {
		return "null"
	}
	return fmt.Sprintf("%q", b)
}
