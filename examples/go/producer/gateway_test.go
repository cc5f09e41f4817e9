// Tests against a running gateway: a round trip in plaintext and one over
// TLS with a client certificate and an API key, each producing several
// batches on one stream, checking every ack and the one per-record error in
// order, and reading the records back from Kafka with franz-go. The
// variables they need are listed in helpers_test.go.

package producer_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "kafka-gateway/examples/go/gen/kafkagatewayv1"
	"kafka-gateway/examples/go/internal/kafkatest"
	"kafka-gateway/examples/go/producer"
)

func TestProduceAndReadBack(t *testing.T) {
	env := kafkatest.Need(t, "the plaintext round trip", "KAFKA_GATEWAY_TARGET", "KAFKA_BOOTSTRAP_SERVERS")
	target, bootstrap := env[0], env[1]
	topic := kafkatest.Topic(t, bootstrap, "plain")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	client, err := producer.New(target, producer.WithMaxInFlight(2))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	batches := richBatches(topic, 100)
	results := sendAll(t, ctx, client, batches)
	kafkatest.ReadBack(t, bootstrap, topic, checkAcks(t, topic, batches, results))
}

func TestTLSWithClientCertificateAndToken(t *testing.T) {
	env := kafkatest.Need(t, "the TLS round trip", "KAFKA_TEST_TLS_TARGET", "KAFKA_TEST_TLS_CA", "KAFKA_TEST_TLS_CLIENT_CERT",
		"KAFKA_TEST_TLS_CLIENT_KEY", "KAFKA_TEST_TOKEN", "KAFKA_TEST_PRINCIPAL", "KAFKA_TEST_PRINCIPAL_HEADER", "KAFKA_BOOTSTRAP_SERVERS")
	target, ca, cert, key, token, principal, header, bootstrap := env[0], env[1], env[2], env[3], env[4], env[5], env[6], env[7]
	topic := kafkatest.Topic(t, bootstrap, "tls")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("round trip, stamped with the principal", func(t *testing.T) {
		client, err := producer.New(target, producer.WithTLSFiles(ca, cert, key), producer.WithToken(token))
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		batches := richBatches(topic, 200)
		results := sendAll(t, ctx, client, batches)
		// The gateway adds the principal's header after the record's own.
		stamp := &pb.Header{Key: header, Value: []byte(principal)}
		kafkatest.ReadBack(t, bootstrap, topic, checkAcks(t, topic, batches, results, stamp))
	})

	t.Run("an unknown token fails UNAUTHENTICATED, without reconnecting", func(t *testing.T) {
		client, err := producer.New(target, producer.WithTLSFiles(ca, cert, key), producer.WithToken("not-a-key-the-gateway-knows-0123456789"))
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		stream, err := client.Produce(ctx)
		if err == nil {
			defer stream.Close()
			if err = stream.Send(&pb.ProduceRequest{BatchId: 1, Topic: topic, Records: []*pb.Record{{Value: []byte("never stored")}}}); err == nil {
				_, err = stream.Recv()
			}
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("want UNAUTHENTICATED, got %v", err)
		}
		t.Logf("UNAUTHENTICATED: %s", status.Convert(err).Message())
	})
}
