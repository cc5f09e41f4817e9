// Package producer is a Go client of kafka-gateway's Producer service: it
// opens a Produce stream, sends batches of records on it from a sender
// goroutine and reads their responses in a Recv loop, one per batch, in the
// order sent. It keeps a bounded number of batches in flight, and when the
// gateway ends a stream with UNAVAILABLE (shutting down, connection age
// reached, unreachable) or RESOURCE_EXHAUSTED (too many streams) it opens a
// new one, with backoff and a bounded number of attempts, and resends exactly
// the batches that got no response, in order.
//
// This file holds the connection: the target, TLS, the bearer token and the
// OpenTelemetry stats handler that carries the caller's trace context
// (W3C traceparent) to the gateway. stream.go holds the stream.
package producer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	pb "kafka-gateway/examples/go/gen/kafkagatewayv1"
)

// Defaults of the stream's flow control and reconnection.
const (
	// DefaultMaxInFlight batches sent (or queued to send) and not yet
	// returned by Recv. Enough to keep a stream busy across a round trip;
	// the gateway has its own window behind it.
	DefaultMaxInFlight = 8
	// DefaultMaxAttempts new streams tried in a row, after a stream broke,
	// before Recv returns the error. A stream that gets a response counts
	// as progress and starts the count again.
	DefaultMaxAttempts = 5
	// DefaultBackoffBase is the wait before the first new stream; it doubles
	// on each attempt, up to DefaultBackoffMax, with jitter.
	DefaultBackoffBase = 100 * time.Millisecond
	// DefaultBackoffMax caps the wait between attempts.
	DefaultBackoffMax = 5 * time.Second
)

// Client is a connection to a gateway. It is safe for concurrent use; each
// Produce call opens its own stream on it.
type Client struct {
	conn *grpc.ClientConn
	rpc  pb.ProducerClient
	cfg  config
}

// config is what the options set.
type config struct {
	// tls is set for an https:// target or when a CA, a client certificate
	// or a server name was given.
	tls *tls.Config
	// token goes as `authorization: Bearer <token>` on every stream.
	token       string
	maxInFlight int
	maxAttempts int
	backoffBase time.Duration
	backoffMax  time.Duration
	dialOptions []grpc.DialOption
	telemetry   []otelgrpc.Option
	// errs collects option errors, reported by New.
	errs []error
}

// Option configures a Client.
type Option func(*config)

// WithTLSFiles verifies the gateway against the CA certificates in caFile
// (PEM; empty: the system's roots) and, when certFile and keyFile are given,
// presents that client certificate (for a gateway started with
// --tls-client-ca). It makes the connection TLS whatever the target's scheme.
func WithTLSFiles(caFile, certFile, keyFile string) Option {
	return func(c *config) {
		cfg := c.tlsConfig()
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				c.errs = append(c.errs, fmt.Errorf("reading the gateway's CA: %w", err))
				return
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				c.errs = append(c.errs, fmt.Errorf("%s holds no PEM certificate: give the CA that signed the gateway's certificate", caFile))
				return
			}
			cfg.RootCAs = pool
		}
		if (certFile == "") != (keyFile == "") {
			c.errs = append(c.errs, errors.New("a client certificate needs its key: give both, or neither"))
			return
		}
		if certFile != "" {
			pair, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				c.errs = append(c.errs, fmt.Errorf("loading the client certificate %s and key %s: %w", certFile, keyFile, err))
				return
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
	}
}

// WithServerName verifies the gateway's certificate for name instead of the
// target's host.
func WithServerName(name string) Option {
	return func(c *config) { c.tlsConfig().ServerName = name }
}

// WithToken sends token as `authorization: Bearer <token>` (an API key or a
// JWT) on every stream. It needs TLS: New refuses a token over plaintext.
func WithToken(token string) Option {
	return func(c *config) { c.token = token }
}

// WithMaxInFlight bounds the batches sent and not yet returned by Recv;
// Send blocks while n are. Default DefaultMaxInFlight.
func WithMaxInFlight(n int) Option {
	return func(c *config) {
		if n < 1 {
			c.errs = append(c.errs, fmt.Errorf("max in-flight batches must be at least 1, not %d", n))
		}
		c.maxInFlight = n
	}
}

// WithReconnect sets how many new streams are tried in a row after a stream
// broke with UNAVAILABLE or RESOURCE_EXHAUSTED (0: none, the error is
// returned at once), and the backoff between them: base, doubled per
// attempt up to max, with jitter.
func WithReconnect(attempts int, base, max time.Duration) Option {
	return func(c *config) {
		if attempts < 0 || base <= 0 || max < base {
			c.errs = append(c.errs, fmt.Errorf("reconnect: need attempts >= 0 and 0 < base <= max, not %d, %v, %v", attempts, base, max))
		}
		c.maxAttempts, c.backoffBase, c.backoffMax = attempts, base, max
	}
}

// WithDialOptions adds grpc.DialOptions, e.g. a context dialer in tests.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.dialOptions = append(c.dialOptions, opts...) }
}

// WithTelemetry passes options to the otelgrpc stats handler, e.g. a tracer
// provider or propagators other than the global ones.
func WithTelemetry(opts ...otelgrpc.Option) Option {
	return func(c *config) { c.telemetry = append(c.telemetry, opts...) }
}

func (c *config) tlsConfig() *tls.Config {
	if c.tls == nil {
		c.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return c.tls
}

// New connects to the gateway at target: HOST:PORT or http://HOST:PORT in
// plaintext, https://HOST:PORT over TLS, or any gRPC target name
// (dns:///..., passthrough:///...). It does not wait for the connection:
// a gateway that cannot be reached shows as UNAVAILABLE on the stream.
func New(target string, opts ...Option) (*Client, error) {
	cfg := config{
		maxInFlight: DefaultMaxInFlight,
		maxAttempts: DefaultMaxAttempts,
		backoffBase: DefaultBackoffBase,
		backoffMax:  DefaultBackoffMax,
	}
	addr, secure := splitScheme(target)
	if secure {
		cfg.tlsConfig()
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	if err := errors.Join(cfg.errs...); err != nil {
		return nil, err
	}
	if cfg.tls != nil && strings.HasPrefix(target, "http://") {
		return nil, fmt.Errorf("TLS settings were given for the plaintext target %s: use https://", target)
	}
	// The OpenTelemetry handler starts a client span per stream and injects
	// its context (W3C traceparent with the global propagator) into the
	// request's metadata, so the gateway's spans join the caller's trace.
	dial := []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(cfg.telemetry...))}
	if cfg.tls != nil {
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(cfg.tls)))
	} else {
		dial = append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if cfg.token != "" {
		if cfg.tls == nil {
			return nil, fmt.Errorf("a token needs TLS, or it travels in the clear: use an https:// target (or WithTLSFiles), not %s", target)
		}
		dial = append(dial, grpc.WithPerRPCCredentials(bearer(cfg.token)))
	}
	dial = append(dial, cfg.dialOptions...)
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", target, err)
	}
	return &Client{conn: conn, rpc: pb.NewProducerClient(conn), cfg: cfg}, nil
}

// Close closes the connection; open streams fail.
func (c *Client) Close() error { return c.conn.Close() }

// ProduceBatch sends one batch with the unary RPC and returns its response:
// no stream, no resend.
func (c *Client) ProduceBatch(ctx context.Context, req *pb.ProduceRequest) (*pb.ProduceResponse, error) {
	return c.rpc.ProduceBatch(ctx, req)
}

// splitScheme strips http:// or https:// from target; https means TLS.
func splitScheme(target string) (addr string, secure bool) {
	if rest, ok := strings.CutPrefix(target, "https://"); ok {
		return rest, true
	}
	if rest, ok := strings.CutPrefix(target, "http://"); ok {
		return rest, false
	}
	return target, false
}

// bearer is a token sent on every RPC as `authorization: Bearer <token>`.
type bearer string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: a
// token is a secret, so never over plaintext.
func (bearer) RequireTransportSecurity() bool { return true }
