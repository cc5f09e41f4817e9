// Code generation for this module: the Go types and gRPC stubs of
// proto/kafka_gateway/v1/producer.proto, written to ../gen/kafkagatewayv1 by
// buf (the npm package, pinned here; npx fetches it once into npm's cache)
// with the plugins pinned as tools in go.mod. Run `go generate ./...` in
// examples/go before building; the output is not committed.

package producer

//go:generate npx --yes @bufbuild/buf@1.75.0 generate --template ../buf.gen.yaml --output .. ../../..
