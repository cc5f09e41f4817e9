//! Generates the gRPC code and the reflection descriptor set from proto/.
//!
//! The proto is parsed by protox, a pure-Rust compiler, so building needs no
//! system `protoc`.

use std::path::PathBuf;

use prost::Message;

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &["kafka_gateway/v1/producer.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("kafka_gateway_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        // Keys, values and headers arrive as `Bytes` slices of the request
        // buffer, so the gateway never copies a payload before librdkafka does.
        .bytes(".")
        // prost's wire format, with the per-record costs of decoding
        // batches and encoding acks taken out (src/codec.rs).
        .codec_path("crate::codec::GatewayCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
