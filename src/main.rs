//! The `tracemap` command line.

/// mimalloc: the hot path allocates per request and per span; measured
/// faster than the system allocator in `scripts/bench.sh`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracemap::app::{App, BoundAddrs};
use tracemap::config::{Config, ENV_CONFIG, LogFormat, Overrides, ValidConfig};

/// Distributed-tracing and service-map collector.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the collector (the default).
    Run(RunArgs),
    /// Run the collector plus simulated, instrumented microservices, to see a map in seconds.
    Demo(DemoArgs),
    /// Show the service map of a running collector: table, DOT, Mermaid or JSON.
    Map(cli::map::MapArgs),
    /// Send benchmark OTLP/gRPC load to an endpoint and report throughput and latency.
    Loadgen(cli::loadgen::LoadgenArgs),
    /// Validate a config file and print the effective configuration.
    CheckConfig {
        /// The YAML file.
        file: PathBuf,
    },
}

#[derive(Args, Debug, Default)]
struct RunArgs {
    /// YAML config file [env: TRACEMAP_CONFIG].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// OTLP/gRPC listen address [env: TRACEMAP_GRPC_LISTEN] [default: 0.0.0.0:4317].
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<std::net::SocketAddr>,
    /// OTLP/HTTP listen address [env: TRACEMAP_HTTP_LISTEN] [default: 0.0.0.0:4318].
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<std::net::SocketAddr>,
    /// API, metrics and health listen address [env: TRACEMAP_API_LISTEN] [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    api_listen: Option<std::net::SocketAddr>,
    /// Directory for durable state [env: TRACEMAP_DATA_DIR] [default: ./tracemap-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log format [env: TRACEMAP_LOG_FORMAT] [default: text].
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Log level or filter, such as `debug` or `info,tracemap=debug` [env: TRACEMAP_LOG_LEVEL].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

impl RunArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            grpc_listen: self.grpc_listen,
            http_listen: self.http_listen,
            api_listen: self.api_listen,
            data_dir: self.data_dir.clone(),
            log_level: self.log_level.clone(),
            log_format: self
                .log_format
                .as_deref()
                .map(|f| f.parse::<LogFormat>().expect("clap checked the value")),
        }
    }
}

#[derive(Args, Debug)]
struct DemoArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Stop the workload and the collector after this long, such as `30s` or `5m` [default: until Ctrl-C].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Map(args)) => map(args),
        Some(Command::Loadgen(args)) => loadgen(args),
        Some(Command::Run(args)) => run(&args),
        Some(Command::Demo(args)) => demo(&args),
        None => run(&cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tracemap: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(Some(file))?.validate()?;
    println!("{}: ok", file.display());
    print!("{}", serde_yaml_ng::to_string(config.get())?);
    Ok(())
}

fn map(args: cli::map::MapArgs) -> anyhow::Result<()> {
    // One request and no server: a single-threaded runtime is plenty.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(cli::map::run(args, &mut std::io::stdout().lock()))?;
    Ok(())
}

fn loadgen(args: cli::loadgen::LoadgenArgs) -> anyhow::Result<()> {
    let format = args.format;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("loadgen")
        .build()
        .context("starting the async runtime")?;
    let summary = runtime.block_on(cli::loadgen::run(args))?;
    print!("{}", summary.render(format));
    anyhow::ensure!(summary.requests_ok > 0, "every request failed");
    Ok(())
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    let config = load_config(args)?;
    serve(&config, |_addrs, shutdown| async move {
        shutdown.cancelled().await;
        Ok(())
    })
}

fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    let config = load_config(&args.run)?;
    let options = cli::demo::DemoOptions {
        duration: args.duration,
        ..Default::default()
    };
    let (config_ref, options) = (&config, &options);
    serve(&config, move |addrs, shutdown| async move {
        cli::demo::run(config_ref, addrs, options, shutdown).await?;
        Ok(())
    })
}

/// The configuration from defaults, file, environment and flags (each
/// overriding the one before); installs logging as it says.
fn load_config(args: &RunArgs) -> anyhow::Result<ValidConfig> {
    let env = |name: &str| std::env::var(name).ok();
    let config_path = args
        .config
        .clone()
        .or_else(|| env(ENV_CONFIG).filter(|p| !p.is_empty()).map(PathBuf::from));
    let mut config = Config::load(config_path.as_deref())?;
    Overrides::from_env(env)?.apply(&mut config);
    args.overrides().apply(&mut config);
    let config = config.validate()?;
    tracemap::telemetry::init(&config.log);
    Ok(config)
}

/// Starts the collector, runs `work` beside it until `work` returns, then
/// shuts the collector down in stages. `work` gets the bound addresses and
/// the token that SIGTERM or SIGINT cancels; `run` and `demo` share this
/// path so the demo starts and stops exactly as the collector does.
fn serve<F, Fut>(config: &ValidConfig, work: F) -> anyhow::Result<()>
where
    F: FnOnce(BoundAddrs, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tracemap")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = tracemap::shutdown::on_signal().context("installing signal handlers")?;
        let no_consumers = |_shard: usize| Vec::new();
        let app = App::start(config, &no_consumers).await?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            mode = config.mode.as_str(),
            workers = config.pipeline.worker_count(),
            "tracemap started"
        );
        let worked = work(app.addrs, shutdown).await;
        let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
        let drained = app.shutdown(deadline).await;
        // The work's own failure explains more than a shutdown one.
        worked?;
        let report = drained?;
        tracing::info!(
            processed_spans = report.processed_spans,
            "pipeline drained, exiting"
        );
        Ok(())
    })
}
