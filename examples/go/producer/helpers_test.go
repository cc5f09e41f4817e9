// Helpers of the tests that produce through a gateway: the batches they
// send (every kind of record the contract allows, and one the gateway must
// fail on its own), a stream that sends them while the caller receives, and
// the checks of the acks, which return the records Kafka should hold for
// kafkatest.ReadBack.

package producer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	pb "kafka-gateway/examples/go/gen/kafkagatewayv1"
	"kafka-gateway/examples/go/internal/kafkatest"
	"kafka-gateway/examples/go/producer"
)

// invalidTopic is no legal Kafka topic name: the gateway fails the record
// that names it with ERROR_CODE_INVALID_RECORD, and only that record.
const invalidTopic = "not a valid topic!"

// richBatches are the batches of a round trip to topic: keys, values,
// headers with a duplicate key and an empty value, a null key, an empty key
// and value, an explicit partition and timestamp, a record for an invalid
// topic between good ones, and bulk batches. Batch ids count from first.
func richBatches(topic string, first uint64) []*pb.ProduceRequest {
	b := func(s string) []byte { return []byte(s) }
	h := func(k, v string) *pb.Header { return &pb.Header{Key: k, Value: b(v)} }
	partition0 := int32(0)
	ts := int64(1_700_000_000_000)
	batches := []*pb.ProduceRequest{
		{Topic: topic, Records: []*pb.Record{
			{Key: b("k-0"), Value: b("first 0"), Headers: []*pb.Header{h("source", "go"), h("seq", "0")}},
			{Key: b("k-1"), Value: b("first 1"), Headers: []*pb.Header{h("source", "go"), h("seq", "1")}},
			{Key: b("k-2"), Value: b("first 2"), Headers: []*pb.Header{h("source", "go"), h("seq", "2")}},
		}},
		{Topic: topic, Records: []*pb.Record{
			{Key: b("p0-a"), Value: b("on partition 0"), Partition: &partition0, TimestampMs: &ts},
			{Key: b("p0-b"), Value: b("also partition 0"), Partition: &partition0,
				Headers: []*pb.Header{h("dup", "1"), h("dup", "2"), h("empty", ""), h("dup", "3")}},
			{Value: b("no key")},             // key unset: null
			{Key: []byte{}, Value: []byte{}}, // empty, not null
		}},
		{Topic: topic, Records: []*pb.Record{
			{Key: b("before-bad"), Value: b("ok")},
			{Topic: invalidTopic, Key: b("bad-topic"), Value: b("never sent")},
			{Key: b("after-bad"), Value: b("ok")},
		}},
	}
	for i := range 3 {
		var records []*pb.Record
		for j := range 15 {
			records = append(records, &pb.Record{
				Key:     b(fmt.Sprintf("k-%d", j%5)),
				Value:   b(fmt.Sprintf("bulk %d-%d", i, j)),
				Headers: []*pb.Header{h("batch", fmt.Sprint(i))},
			})
		}
		batches = append(batches, &pb.ProduceRequest{Topic: topic, Records: records})
	}
	for i, batch := range batches {
		batch.BatchId = first + uint64(i)
	}
	return batches
}

// sendAll sends batches on one stream of client, from a goroutine, while
// this one receives; it returns every result in the order received.
func sendAll(t *testing.T, ctx context.Context, client *producer.Client, batches []*pb.ProduceRequest) []*producer.Result {
	t.Helper()
	stream, err := client.Produce(ctx)
	if err != nil {
		t.Fatalf("opening the Produce stream: %v", err)
	}
	defer stream.Close()
	sendErr := make(chan error, 1)
	go func() {
		defer stream.CloseSend()
		for _, batch := range batches {
			if err := stream.Send(batch); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	var results []*producer.Result
	for {
		res, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("Recv after %d of %d batches: %v", len(results), len(batches), err)
			}
			break
		}
		results = append(results, res)
	}
	if err := <-sendErr; err != nil {
		t.Fatalf("Send: %v", err)
	}
	return results
}

// checkAcks checks the results of richBatches(topic, ...): one response per
// batch in order, one result per record; the invalid-topic record failed
// with INVALID_RECORD, not retriable; every other record acked on topic, on
// its asked-for partition, one partition per key, offsets growing per
// partition in ack order. It returns the records Kafka should hold, each with
// stamp appended to its headers.
func checkAcks(t *testing.T, topic string, batches []*pb.ProduceRequest, results []*producer.Result, stamp ...*pb.Header) []kafkatest.Stored {
	t.Helper()
	if len(results) != len(batches) {
		t.Fatalf("%d responses for %d batches", len(results), len(batches))
	}
	var want []kafkatest.Stored
	lastOffset := map[int32]int64{}
	partitionOfKey := map[string]int32{}
	failures := 0
	for i, res := range results {
		if res.Response.GetBatchId() != batches[i].GetBatchId() {
			t.Fatalf("response %d answers batch %d, want %d: out of order", i, res.Response.GetBatchId(), batches[i].GetBatchId())
		}
		for j, record := range batches[i].GetRecords() {
			where := fmt.Sprintf("batch %d record %d", batches[i].GetBatchId(), j)
			result := res.Response.GetResults()[j]
			if record.GetTopic() == invalidTopic {
				failures++
				e := result.GetError()
				if e == nil || e.GetCode() != pb.ErrorCode_ERROR_CODE_INVALID_RECORD || e.GetRetriable() {
					t.Fatalf("%s (topic %q): want a non-retriable ERROR_CODE_INVALID_RECORD, got %v", where, invalidTopic, result)
				}
				t.Logf("%s: %s: %s", where, e.GetCode(), e.GetMessage())
				continue
			}
			ack := result.GetOk()
			if ack == nil {
				t.Fatalf("%s: want an ack, got %v", where, result.GetError())
			}
			if got := res.Topic(ack); got != topic {
				t.Errorf("%s: acked on topic %q, want %q", where, got, topic)
			}
			if record.Partition != nil && ack.GetPartition() != record.GetPartition() {
				t.Errorf("%s: acked on partition %d, asked for %d", where, ack.GetPartition(), record.GetPartition())
			}
			if record.Key != nil && record.Partition == nil {
				k := string(record.GetKey())
				if p, seen := partitionOfKey[k]; seen && p != ack.GetPartition() {
					t.Errorf("%s: key %q acked on partition %d and %d", where, k, p, ack.GetPartition())
				}
				partitionOfKey[k] = ack.GetPartition()
			}
			if ack.GetOffset() < 0 {
				t.Fatalf("%s: acked at offset %d: no position to read back", where, ack.GetOffset())
			}
			if last, seen := lastOffset[ack.GetPartition()]; seen && ack.GetOffset() <= last {
				t.Errorf("%s: partition %d offset %d acked after offset %d", where, ack.GetPartition(), ack.GetOffset(), last)
			}
			lastOffset[ack.GetPartition()] = ack.GetOffset()
			want = append(want, kafkatest.Stored{
				Partition: ack.GetPartition(), Offset: ack.GetOffset(), Record: record,
				Headers: append(append([]*pb.Header(nil), record.GetHeaders()...), stamp...),
			})
		}
	}
	if failures != 1 {
		t.Fatalf("%d records for the invalid topic failed, want 1", failures)
	}
	t.Logf("%d acks in order (last offset per partition: %v), 1 per-record error", len(want), lastOffset)
	return want
}
