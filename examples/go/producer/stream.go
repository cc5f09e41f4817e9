// The Produce stream: Send queues a batch (blocking while the in-flight
// bound is reached), a sender goroutine writes queued batches to the gRPC
// stream, and a Recv loop pairs each response with the oldest unanswered
// batch and hands both to the caller's Recv, in order. When the gRPC stream
// breaks with UNAVAILABLE or RESOURCE_EXHAUSTED, a new one is opened after a
// backoff and the unanswered batches are sent on it again, in order, before
// any new one: the caller sees every response once, in the order it sent.
//
// A resent batch may be stored twice: the gateway may have handed it to
// Kafka before the stream broke (see the proto's guarantees). Transactional
// streams should not rely on the resend: their open transaction was aborted
// with the old stream.

package producer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "kafka-gateway/examples/go/gen/kafkagatewayv1"
)

// ErrSendClosed is returned by Send after CloseSend.
var ErrSendClosed = errors.New("send on a stream after CloseSend")

// Result is the gateway's answer to one batch.
type Result struct {
	// Request is the batch as it was sent.
	Request *pb.ProduceRequest
	// Response holds one RecordResult per record of Request, in order.
	Response *pb.ProduceResponse
}

// Topic returns the topic of an ack in r: its own, or with compact acks the
// response's.
func (r *Result) Topic(ack *pb.RecordMetadata) string {
	if ack.GetTopic() != "" {
		return ack.GetTopic()
	}
	return r.Response.GetTopic()
}

// Stream is one logical Produce stream, which may span several gRPC streams
// when the gateway asks the client to come back. Send and CloseSend may be
// called from one goroutine while Recv is called from another.
type Stream struct {
	client *Client
	ctx    context.Context
	cancel context.CancelFunc

	// in carries batches from Send to the sender goroutine; closed by CloseSend.
	in chan *pb.ProduceRequest
	// slots bounds the batches between Send and Recv: Send takes a slot,
	// Recv gives it back.
	slots chan struct{}
	// results carries answered batches to Recv. Its capacity is the
	// in-flight bound, so the Recv loop never waits on the caller.
	results chan Result
	// opened is closed once the first gRPC stream is open, or run gave up.
	opened chan struct{}
	// done is closed when run has ended, with err set.
	done chan struct{}
	err  error

	// sendMu orders Send against CloseSend.
	sendMu     sync.Mutex
	sendClosed bool

	// mu guards pending and halfClosed, shared by the sender goroutine (which
	// appends) and the Recv loop (which pops).
	mu sync.Mutex
	// pending are the batches taken from in and not yet answered, oldest
	// first: what a new gRPC stream sends again.
	pending []*pb.ProduceRequest
	// halfClosed: the sender took the end of in and closed its side.
	halfClosed bool
}

// Produce opens a Produce stream. ctx bounds the whole stream, all its
// reconnections included; its values (the trace context) go with every
// gRPC stream. It returns once the first gRPC stream is open, or with the
// error that kept it from opening.
func (c *Client) Produce(ctx context.Context) (*Stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	s := &Stream{
		client:  c,
		ctx:     ctx,
		cancel:  cancel,
		in:      make(chan *pb.ProduceRequest, c.cfg.maxInFlight),
		slots:   make(chan struct{}, c.cfg.maxInFlight),
		results: make(chan Result, c.cfg.maxInFlight),
		opened:  make(chan struct{}),
		done:    make(chan struct{}),
	}
	go s.run()
	<-s.opened
	select {
	case <-s.done:
		if s.err != io.EOF {
			return nil, s.err
		}
	default:
	}
	return s, nil
}

// Send queues req to be sent, in order after the batches before it. It
// blocks while the in-flight bound is reached, until Recv returns an earlier
// batch. req must not be changed afterwards: it may be sent again.
func (s *Stream) Send(req *pb.ProduceRequest) error {
	select {
	case s.slots <- struct{}{}:
	case <-s.done:
		return s.failure()
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.sendClosed {
		<-s.slots
		return ErrSendClosed
	}
	// Never blocks: in has a place for every slot.
	s.in <- req
	return nil
}

// CloseSend says no more batches follow. Recv returns io.EOF once all sent
// batches are answered.
func (s *Stream) CloseSend() {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if !s.sendClosed {
		s.sendClosed = true
		close(s.in)
	}
}

// Recv returns the next answered batch, in the order sent. After CloseSend
// and the last answer it returns io.EOF; when the stream failed for good
// (a status other than UNAVAILABLE and RESOURCE_EXHAUSTED, the reconnect
// attempts used up, ctx done) it returns that error, a gRPC status, after
// the answers that came before it.
func (s *Stream) Recv() (*Result, error) {
	r, ok := <-s.results
	if !ok {
		return nil, s.err
	}
	<-s.slots
	return &r, nil
}

// Close abandons the stream: batches still unanswered may or may not be
// stored.
func (s *Stream) Close() {
	s.cancel()
	<-s.done
}

// failure is the error Send returns once run has ended.
func (s *Stream) failure() error {
	if s.err == io.EOF {
		return ErrSendClosed
	}
	return s.err
}

// run opens gRPC streams until one ends cleanly or for good.
func (s *Stream) run() {
	var err error
	defer func() {
		s.err = err
		close(s.results)
		// done before opened: Produce, woken by opened, must see the failure.
		close(s.done)
		select {
		case <-s.opened:
		default:
			close(s.opened)
		}
		s.cancel()
	}()
	failures := 0
	for {
		var progressed bool
		progressed, err = s.attempt()
		if err == nil {
			err = io.EOF
			return
		}
		if !retriable(err) {
			return
		}
		if progressed {
			failures = 0
		}
		failures++
		if failures > s.client.cfg.maxAttempts {
			st := status.Convert(err)
			err = status.Errorf(st.Code(), "%s (giving up after %d new streams in a row ended the same way; WithReconnect allows more)", st.Message(), failures-1)
			return
		}
		select {
		case <-time.After(s.backoff(failures)):
		case <-s.ctx.Done():
			err = status.FromContextError(s.ctx.Err()).Err()
			return
		}
	}
}

// retriable: the gateway asked the client to come back later.
func retriable(err error) bool {
	var own *ownError
	if errors.As(err, &own) {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.ResourceExhausted:
		return true
	}
	return false
}

// backoff is the wait before the n-th new stream in a row (n >= 1): base
// doubled per attempt up to max, the upper half of it chosen at random so
// that clients that broke together come back apart.
func (s *Stream) backoff(n int) time.Duration {
	d := s.client.cfg.backoffBase
	for i := 1; i < n && d < s.client.cfg.backoffMax; i++ {
		d *= 2
	}
	d = min(d, s.client.cfg.backoffMax)
	return d/2 + rand.N(d/2+1)
}

// attempt runs one gRPC stream: it sends the unanswered batches again, then
// new ones, and delivers responses until the stream ends. nil: it ended
// after every batch was answered and the caller closed its side.
// progressed: at least one response came.
func (s *Stream) attempt() (progressed bool, err error) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stream, err := s.client.rpc.Produce(ctx)
	if err != nil {
		return false, err
	}
	select {
	case <-s.opened:
	default:
		close(s.opened)
	}

	var sendErr error
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		sendErr = s.send(ctx, stream)
		if sendErr != nil {
			cancel()
		}
	}()
	defer func() {
		cancel()
		<-sent
		// A batch the client could not send (too large for the connection,
		// not encodable) would fail again on a new stream: that error wins.
		if sendErr != nil {
			err = sendErr
		}
	}()

	for {
		resp, rerr := stream.Recv()
		if rerr == io.EOF {
			s.mu.Lock()
			unanswered, closed := len(s.pending), s.halfClosed
			s.mu.Unlock()
			if unanswered == 0 && closed {
				return progressed, nil
			}
			return progressed, status.Errorf(codes.Internal,
				"the gateway ended the stream with status OK while %d batches were unanswered: point the client at a kafka-gateway", unanswered)
		}
		if rerr != nil {
			return progressed, rerr
		}
		s.mu.Lock()
		var req *pb.ProduceRequest
		if len(s.pending) > 0 {
			req = s.pending[0]
			s.pending[0] = nil
			s.pending = s.pending[1:]
		}
		s.mu.Unlock()
		if req == nil {
			return progressed, status.Errorf(codes.Internal,
				"the gateway answered batch %d, which was not sent: point the client at a kafka-gateway", resp.GetBatchId())
		}
		if resp.GetBatchId() != req.GetBatchId() || len(resp.GetResults()) != len(req.GetRecords()) {
			return progressed, status.Errorf(codes.Internal,
				"the gateway answered batch %d with %d results where batch %d of %d records was next: point the client at a kafka-gateway",
				resp.GetBatchId(), len(resp.GetResults()), req.GetBatchId(), len(req.GetRecords()))
		}
		progressed = true
		// Never blocks: results has a place for every slot.
		s.results <- Result{Request: req, Response: resp}
	}
}

// send writes the unanswered batches, then new ones from in, to stream;
// when in is closed and drained it half-closes. It returns nil when the
// stream broke (the Recv loop sees why) or ctx ended, and an error of its
// own when a batch could not be sent for a reason of the client's.
func (s *Stream) send(ctx context.Context, stream pb.Producer_ProduceClient) error {
	s.mu.Lock()
	again := append([]*pb.ProduceRequest(nil), s.pending...)
	s.mu.Unlock()
	for _, req := range again {
		if err := sendErr(stream.Send(req)); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case req, ok := <-s.in:
			if !ok {
				s.mu.Lock()
				s.halfClosed = true
				s.mu.Unlock()
				_ = stream.CloseSend()
				return nil
			}
			s.mu.Lock()
			s.pending = append(s.pending, req)
			s.mu.Unlock()
			if err := sendErr(stream.Send(req)); err != nil {
				return err
			}
		}
	}
}

// sendErr keeps from stream.Send's error only a failure of the client's
// own: io.EOF means the stream ended, and Recv returns its status.
func sendErr(err error) error {
	if err == nil || err == io.EOF {
		return nil
	}
	if st, ok := status.FromError(err); ok && (st.Code() == codes.Canceled || st.Code() == codes.Unavailable) {
		return nil
	}
	return &ownError{fmt.Errorf("sending a batch: %w", err)}
}

// ownError is a failure of the client's own (a batch it cannot send), which
// a new stream would not cure, whatever its gRPC code.
type ownError struct{ error }

func (e *ownError) Unwrap() error { return e.error }

// Size is the encoded size of a batch in bytes: the gateway refuses batches
// over its --max-batch-bytes.
func Size(req *pb.ProduceRequest) int { return proto.Size(req) }
