// Command produce sends each line of standard input as one record (the line
// is the value, without a key) to a topic through kafka-gateway, and prints
// one line per record, in input order: `topic/partition@offset` when Kafka
// stored it, or `error: CODE: message` when it did not.
//
//	go run ./cmd/produce -topic orders < lines.txt
//	KAFKA_GATEWAY_CA=ca.pem KAFKA_GATEWAY_TOKEN=secret go run ./cmd/produce -target https://gateway:50051 -topic orders
//
// Lines read while the previous batches are in flight go together in the
// next batch (up to -batch), so piped input is batched and typed input is
// sent at once. The TLS and token settings come from the variables that
// `kafka-gateway produce` reads, all optional: KAFKA_GATEWAY_CA (PEM CA
// certificates; default: the system's roots), KAFKA_GATEWAY_CLIENT_CERT and
// KAFKA_GATEWAY_CLIENT_KEY (a client certificate and its key),
// KAFKA_GATEWAY_TLS_SERVER_NAME and KAFKA_GATEWAY_TOKEN (sent as
// `authorization: Bearer <token>`). Exit status: 0 when every record was
// stored, 1 when one was not or the stream failed, 64 for bad usage.
package main

import (
	"bufio"
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	pb "kafka-gateway/examples/go/gen/kafkagatewayv1"
	"kafka-gateway/examples/go/producer"
)

// exitUsage is EX_USAGE from sysexits.h: bad flags or settings.
const exitUsage = 64

func main() {
	// SIGINT or SIGTERM stops reading: what was read is still answered.
	// A second signal ends the command at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr))
}

// run is the command with its flags args, environment getenv and standard
// streams; it returns the exit status. Reading stops when ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("produce", flag.ContinueOnError)
	flags.SetOutput(stderr)
	target := flags.String("target", cmp.Or(getenv("KAFKA_GATEWAY_TARGET"), "127.0.0.1:50051"),
		"the gateway: HOST:PORT or http://HOST:PORT in plaintext, https://HOST:PORT over TLS (env KAFKA_GATEWAY_TARGET)")
	topic := flags.String("topic", "", "the topic to produce to (required)")
	batch := flags.Int("batch", 100, "at most this many lines per batch")
	if err := flags.Parse(args); err != nil {
		return exitUsage
	}
	if *topic == "" || *batch < 1 || flags.NArg() > 0 {
		fmt.Fprintln(stderr, "produce: give -topic NAME (and -batch of at least 1, no other arguments); -h lists the flags")
		return exitUsage
	}
	opts := []producer.Option{}
	ca, cert, key := getenv("KAFKA_GATEWAY_CA"), getenv("KAFKA_GATEWAY_CLIENT_CERT"), getenv("KAFKA_GATEWAY_CLIENT_KEY")
	if ca != "" || cert != "" || key != "" {
		opts = append(opts, producer.WithTLSFiles(ca, cert, key))
	}
	if name := getenv("KAFKA_GATEWAY_TLS_SERVER_NAME"); name != "" {
		opts = append(opts, producer.WithServerName(name))
	}
	if token := getenv("KAFKA_GATEWAY_TOKEN"); token != "" {
		opts = append(opts, producer.WithToken(token))
	}
	client, err := producer.New(*target, opts...)
	if err != nil {
		fmt.Fprintln(stderr, "produce:", err)
		return exitUsage
	}
	defer client.Close()

	// Not ctx: a signal ends the input, not the stream, whose answers are
	// still awaited.
	stream, err := client.Produce(context.Background())
	if err != nil {
		fmt.Fprintln(stderr, "produce: opening the stream:", err)
		return 1
	}
	defer stream.Close()
	go sendLines(ctx, stream, *topic, *batch, stdin, stderr)

	out := bufio.NewWriter(stdout)
	defer out.Flush()
	failed := 0
	for {
		res, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			out.Flush()
			fmt.Fprintln(stderr, "produce: the stream failed:", err)
			return 1
		}
		for _, r := range res.Response.GetResults() {
			if ack := r.GetOk(); ack != nil {
				fmt.Fprintf(out, "%s/%d@%d\n", res.Topic(ack), ack.GetPartition(), ack.GetOffset())
			} else {
				failed++
				fmt.Fprintf(out, "error: %s: %s\n", r.GetError().GetCode(), r.GetError().GetMessage())
			}
		}
		// One flush per batch: a person typing sees each answer at once.
		out.Flush()
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// sendLines reads lines from r into batches of at most max records and
// sends them; at the end of input or when ctx ends it closes the stream's
// sending side.
func sendLines(ctx context.Context, stream *producer.Stream, topic string, max int, r io.Reader, stderr io.Writer) {
	defer stream.CloseSend()
	lines := make(chan []byte, max)
	go func() {
		defer close(lines)
		scanner := bufio.NewScanner(r)
		scanner.Buffer(make([]byte, 64*1024), 16*1024*1024)
		for scanner.Scan() {
			// A copy, never nil: an empty line is an empty value, not a
			// null one (a tombstone).
			line := make([]byte, len(scanner.Bytes()))
			copy(line, scanner.Bytes())
			lines <- line
		}
		if err := scanner.Err(); err != nil {
			fmt.Fprintln(stderr, "produce: reading standard input:", err)
		}
	}()
	var id uint64
	for {
		// Wait for one line, then take whatever else is already there.
		var records []*pb.Record
		select {
		case <-ctx.Done():
			return
		case line, ok := <-lines:
			if !ok {
				return
			}
			records = append(records, &pb.Record{Value: line})
		}
	more:
		for len(records) < max {
			select {
			case line, ok := <-lines:
				if !ok {
					break more
				}
				records = append(records, &pb.Record{Value: line})
			default:
				break more
			}
		}
		id++
		if err := stream.Send(&pb.ProduceRequest{BatchId: id, Topic: topic, Records: records}); err != nil {
			// The stream failed: Recv reports why.
			return
		}
	}
}
