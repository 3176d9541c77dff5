//! The `tracemap` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tracemap::app::App;
use tracemap::config::{Config, ENV_CONFIG, LogFormat, Overrides};

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Run(args)) => run(&args),
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

fn run(args: &RunArgs) -> anyhow::Result<()> {
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

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tracemap")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = tracemap::shutdown::on_signal().context("installing signal handlers")?;
        let no_consumers = |_shard: usize| Vec::new();
        let app = App::start(&config, &no_consumers).await?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            workers = config.pipeline.worker_count(),
            "tracemap started"
        );
        shutdown.cancelled().await;
        let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
        let report = app.shutdown(deadline).await?;
        tracing::info!(
            processed_spans = report.processed_spans,
            "pipeline drained, exiting"
        );
        Ok(())
    })
}
