//! The `kafka-gateway` binary: parses the command line, sets up logging,
//! starts the embedded broker when no Kafka is given, and maps errors to
//! exit codes (64, EX_USAGE, for bad configuration). `produce` is the
//! command-line client; its exit codes are documented in its `--help`.
//! `produce` and `bench` are cargo features (both default): a binary built
//! without one still knows the subcommand's name, and says how to get it.

#[cfg(feature = "client")]
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
#[cfg(feature = "client")]
use kafka_gateway::client::{self, ProduceArgs, Terminal};
use kafka_gateway::{Config, EmbeddedBroker, Error, Listeners, Tracing, shutdown};

/// jemalloc rather than the system allocator: see docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit code for bad configuration (EX_USAGE from sysexits.h).
const EXIT_USAGE: u8 = 64;

/// A gRPC front door to Apache Kafka: ordered per-record acks over a
/// bidirectional stream, with end-to-end backpressure.
#[derive(Debug, Parser)]
#[command(name = "kafka-gateway", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the kafka_gateway.v1.Producer gRPC service. Without
    /// --bootstrap-servers, starts an embedded in-memory Kafka broker.
    Serve(Box<Config>),
    /// Read records from stdin, one per line (text or JSON), and produce
    /// them through a running gateway; prints a summary and exits non-zero
    /// when any record failed.
    #[cfg(feature = "client")]
    Produce(ProduceArgs),
    /// Benchmark the gateway against librdkafka alone, an in-process
    /// producer and the usual FutureProducer::send patterns, on one broker.
    #[cfg(feature = "bench")]
    Bench(kafka_gateway::bench::BenchArgs),
    /// Not built into this binary (cargo feature `client`).
    #[cfg(not(feature = "client"))]
    #[command(hide = true, disable_help_flag = true)]
    Produce(NotBuiltIn),
    /// Not built into this binary (cargo feature `bench`).
    #[cfg(not(feature = "bench"))]
    #[command(hide = true, disable_help_flag = true)]
    Bench(NotBuiltIn),
}

/// The arguments of a subcommand left out of this build: whatever they are,
/// the answer is how to build it in.
#[cfg(not(all(feature = "client", feature = "bench")))]
#[derive(Debug, clap::Args)]
struct NotBuiltIn {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}

/// Says that `subcommand` is not in this build, and which feature brings it.
#[cfg(not(all(feature = "client", feature = "bench")))]
fn not_built_in(subcommand: &str, feature: &str) -> ExitCode {
    eprintln!(
        "error: `kafka-gateway {subcommand}` is not built into this binary: it was built \
         without the `{feature}` cargo feature. Build it with `cargo build --release` \
         (the feature is on by default) or `--features {feature}`."
    );
    ExitCode::from(EXIT_USAGE)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(config) => {
            let result = runtime.block_on(serve(*config));
            // The drain answered every stream within --shutdown-timeout; a
            // transactional call may still hold a blocking thread (a commit
            // to a broker gone silent, given up on at the drain's bound):
            // do not wait for it.
            runtime.shutdown_timeout(Duration::from_secs(1));
            result
        }
        #[cfg(feature = "client")]
        Command::Produce(args) => {
            let code = runtime.block_on(produce(args));
            // stdin is read on a blocking thread that cannot be cancelled:
            // do not wait for it (after Ctrl-C or a broken stream, it may
            // wait for a line that never comes).
            runtime.shutdown_background();
            return code;
        }
        #[cfg(feature = "bench")]
        Command::Bench(args) => runtime.block_on(kafka_gateway::bench::run(args)),
        #[cfg(not(feature = "client"))]
        Command::Produce(_) => return not_built_in("produce", "client"),
        #[cfg(not(feature = "bench"))]
        Command::Bench(_) => return not_built_in("bench", "bench"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            match err {
                Error::Config(_) | Error::Producer(_) => ExitCode::from(EXIT_USAGE),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn serve(config: Config) -> Result<(), Error> {
    // First, so that a SIGTERM from now on drains rather than kills.
    let stop = shutdown::os_signal();
    config.validate()?;
    let embedded = match config.bootstrap_servers {
        Some(_) => None,
        None => {
            let mut broker =
                EmbeddedBroker::start(config.embedded_brokers, config.embedded_partitions)?;
            tracing::warn!(
                "no --bootstrap-servers given: started an embedded in-memory Kafka broker; \
                 everything produced is lost when the gateway stops"
            );
            if let Err(err) = broker.forward(config.embedded_listen) {
                tracing::warn!(
                    "cannot listen on {} ({err}): the embedded broker uses a free port instead; \
                     --embedded-listen (KAFKA_GATEWAY_EMBEDDED_LISTEN) picks another address",
                    config.embedded_listen
                );
            }
            tracing::info!(
                "embedded Kafka broker bootstrap.servers={} (read a topic back: kcat -b {} -C -t TOPIC -e)",
                broker.bootstrap_servers(),
                broker.bootstrap_servers()
            );
            Some(Arc::new(broker))
        }
    };
    let listeners = Listeners::bind(&config).await?;
    let tracing = Tracing::from_env()?;
    kafka_gateway::run(listeners, config, embedded, tracing, stop).await
}

#[cfg(feature = "client")]
async fn produce(args: ProduceArgs) -> ExitCode {
    let terminal = Terminal {
        stdin: std::io::stdin().is_terminal(),
        stderr: std::io::stderr().is_terminal(),
    };
    let input = tokio::io::BufReader::with_capacity(64 * 1024, tokio::io::stdin());
    match client::run(args, input, terminal, interrupted()).await {
        Ok(finished) => ExitCode::from(finished.exit_code),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// Resolves on the first Ctrl-C, so `produce` stops reading and finishes
/// what it sent; a second Ctrl-C exits at once.
#[cfg(feature = "client")]
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        return std::future::pending().await;
    }
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted again: exiting without waiting for acknowledgements");
            std::process::exit(client::EXIT_INTERRUPTED.into());
        }
    });
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
