// Tests of the produce command against a running gateway
// (KAFKA_GATEWAY_TARGET, producing to KAFKA_BOOTSTRAP_SERVERS): lines in,
// one `topic/partition@offset` per line out, in order, and the lines read
// back from Kafka as the acked records' values; a record the gateway fails
// prints its error and the command exits 1; bad usage exits 64.

package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	pb "kafka-gateway/examples/go/gen/kafkagatewayv1"
	"kafka-gateway/examples/go/internal/kafkatest"
)

// produce runs the command with args and stdin against KAFKA_GATEWAY_TARGET.
func produce(t *testing.T, stdin string, args ...string) (status int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	status = run(context.Background(), args, os.Getenv, strings.NewReader(stdin), &out, &errOut)
	return status, out.String(), errOut.String()
}

func TestLinesInAcksOut(t *testing.T) {
	env := kafkatest.Need(t, "the produce command", "KAFKA_GATEWAY_TARGET", "KAFKA_BOOTSTRAP_SERVERS")
	bootstrap := env[1]
	topic := kafkatest.Topic(t, bootstrap, "cmd")
	lines := []string{"first", "", "third, after an empty line", "fourth", "fifth", "sixth", "seventh"}

	status, stdout, stderr := produce(t, strings.Join(lines, "\n")+"\n", "-topic", topic, "-batch", "3")
	if status != 0 {
		t.Fatalf("exit %d, stderr: %s\nstdout: %s", status, stderr, stdout)
	}
	acks := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(acks) != len(lines) {
		t.Fatalf("%d lines out for %d in:\n%s", len(acks), len(lines), stdout)
	}
	ack := regexp.MustCompile("^" + regexp.QuoteMeta(topic) + `/(\d+)@(\d+)$`)
	last := map[int32]int64{}
	var want []kafkatest.Stored
	for i, line := range acks {
		m := ack.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("line %d: %q, want %s/PARTITION@OFFSET", i+1, line, topic)
		}
		p, _ := strconv.ParseInt(m[1], 10, 32)
		o, _ := strconv.ParseInt(m[2], 10, 64)
		if prev, seen := last[int32(p)]; seen && o <= prev {
			t.Fatalf("line %d: %s after offset %d on that partition: out of order", i+1, line, prev)
		}
		last[int32(p)] = o
		want = append(want, kafkatest.Stored{Partition: int32(p), Offset: o, Record: &pb.Record{Value: []byte(lines[i])}})
	}
	t.Logf("acks:\n%s", stdout)
	kafkatest.ReadBack(t, bootstrap, topic, want)
}

func TestARecordTheGatewayFailsPrintsItsError(t *testing.T) {
	kafkatest.Need(t, "the produce command", "KAFKA_GATEWAY_TARGET")
	status, stdout, stderr := produce(t, "a\nb\n", "-topic", "not a valid topic!")
	if status != 1 {
		t.Fatalf("exit %d, want 1; stderr: %s", status, stderr)
	}
	for i, line := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		if !strings.HasPrefix(line, "error: ERROR_CODE_INVALID_RECORD: ") || i > 1 {
			t.Fatalf("line %d: %q, want one `error: ERROR_CODE_INVALID_RECORD: ...` per input line", i+1, line)
		}
	}
	if strings.Count(stdout, "\n") != 2 {
		t.Fatalf("want 2 lines, got %q", stdout)
	}
	t.Log(stdout)
}

func TestBadUsageExits64(t *testing.T) {
	for _, args := range [][]string{{}, {"-topic", "t", "-batch", "0"}, {"-topic", "t", "extra"}, {"-no-such-flag"}} {
		if status, _, stderr := produce(t, "", args...); status != exitUsage {
			t.Errorf("produce %v: exit %d, want %d (%s)", args, status, exitUsage, stderr)
		}
	}
	if status, _, stderr := produce(t, "", "-topic", "t", "-target", "http://127.0.0.1:1"); status == 0 {
		t.Errorf("no gateway at the target, yet exit 0 (%s)", stderr)
	} else {
		t.Logf("unreachable gateway: exit %d: %s", status, strings.TrimSpace(stderr))
	}
}
