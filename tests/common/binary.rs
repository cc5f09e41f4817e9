//! The `kafka-gateway` binary as a user runs it: started with arguments and
//! environment, its addresses read from its log, stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_kafka-gateway");

/// A running `kafka-gateway serve`.
pub struct Served {
    pub child: Child,
    /// The gRPC address.
    pub grpc: String,
    /// The embedded broker's address, when it started one.
    pub bootstrap: Option<String>,
    /// The metrics listener's address, when it has one.
    pub metrics: Option<String>,
    /// Every log line up to the gRPC server's start.
    pub startup: Vec<String>,
    /// Every later log line.
    pub lines: mpsc::Receiver<String>,
}

/// A test that fails midway must not leave the gateway running.
impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value after `key=` on a log line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    line[start..].split_whitespace().next()
}

/// `kafka-gateway SUBCOMMAND ARGS` in an environment cleared of the
/// gateway's and OpenTelemetry's variables, with `envs` added.
pub fn command(subcommand: &str, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.arg(subcommand).args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("KAFKA_GATEWAY_") || name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command.envs(envs.iter().copied());
    command
}

/// Starts `kafka-gateway serve --listen 127.0.0.1:0 ARGS` with `envs` added to
/// an environment cleared of the gateway's and OpenTelemetry's variables, and
/// waits until it serves. Its embedded broker takes a free port (tests run in
/// parallel), unless `envs` or `args` say otherwise.
pub fn serve(args: &[&str], envs: &[(&str, &str)]) -> Served {
    let mut command = command(
        "serve",
        &[],
        &[
            ("RUST_LOG", "info"),
            ("KAFKA_GATEWAY_EMBEDDED_LISTEN", "127.0.0.1:0"),
        ],
    );
    let mut child = command
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("gateway: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut startup = Vec::new();
    let (mut bootstrap, mut metrics) = (None, None);
    let grpc = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the gateway logs its addresses within 30 s");
        if line.contains("embedded Kafka broker") {
            bootstrap = field(&line, "bootstrap.servers=").map(str::to_owned);
        }
        if line.contains("metrics and probes listening") {
            metrics = field(&line, "addr=").map(str::to_owned);
        }
        if line.contains("gRPC server listening") {
            let grpc = field(&line, "addr=").map(str::to_owned);
            startup.push(line);
            break grpc.expect("the gRPC address is logged");
        }
        startup.push(line);
    };
    Served {
        child,
        grpc,
        bootstrap,
        metrics,
        startup,
        lines: rx,
    }
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits up to 60 s for the process to exit.
pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("the gateway did not exit within 60 s");
}
