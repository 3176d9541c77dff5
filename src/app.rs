//! Builds receivers, pipeline, exporters and API from a valid config, and
//! owns the staged shutdown: readiness off → receivers stop and finish
//! in-flight requests → queues drain and consumers flush → the history
//! store writes the last minutes while exporters send what they queued
//! (agents: gateway queues flush) → API server stops.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Mode, ValidConfig};
use crate::exporter::ExporterMetrics;
use crate::exporter::cloudwatch::{self, CloudWatchError, CloudWatchExporter};
use crate::exporter::disk::Durability;
use crate::exporter::forward::{ForwardError, Forwarder};
use crate::exporter::prometheus::ServiceGraphCollector;
use crate::exporter::xray::{self, XrayError, XrayExporter};
use crate::graph::{Graph, unix_minute};
use crate::pipeline::memory::{MemoryLimit, MemoryWatcher, Shrink};
use crate::pipeline::{ConsumerFactory, DrainReport, Pipeline, PipelineError, SpanConsumer};
use crate::receiver::{ReceiverMetrics, otlp_grpc, otlp_http};
use crate::store::{History, Store, StoreMetrics};
use crate::web::{self, Readiness};

/// Why the collector could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} for {component}")]
    Bind {
        /// The component, such as `otlp_grpc`.
        component: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The data directory cannot be created or written.
    #[error("data directory {path} is not usable")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Draining did not finish in time.
    #[error(transparent)]
    Drain(#[from] PipelineError),
    /// The X-Ray exporter could not start.
    #[error("cannot start the x-ray exporter")]
    Xray(#[source] XrayError),
    /// The CloudWatch exporter could not start.
    #[error("cannot start the cloudwatch exporter")]
    CloudWatch(#[source] CloudWatchError),
    /// Agent forwarding could not start.
    #[error("cannot start forwarding to gateways")]
    Forward(#[from] ForwardError),
}

/// Addresses actually bound (ports resolved when configured as 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    /// OTLP/gRPC, if enabled.
    pub grpc: Option<SocketAddr>,
    /// OTLP/HTTP, if enabled.
    pub http: Option<SocketAddr>,
    /// API server.
    pub api: SocketAddr,
}

/// A started collector.
pub struct App {
    /// Where it listens.
    pub addrs: BoundAddrs,
    /// The live service graph.
    pub graph: Graph,
    /// The graph with its stored history.
    pub history: History,
    pipeline: Pipeline,
    memory: MemoryWatcher,
    xray: Option<XrayExporter>,
    cloudwatch: Option<CloudWatchExporter>,
    forwarder: Option<Forwarder>,
    readiness: Arc<Readiness>,
    stop_receivers: CancellationToken,
    stop_api: CancellationToken,
    receivers: Vec<(&'static str, JoinHandle<Result<(), String>>)>,
    api: JoinHandle<std::io::Result<()>>,
}

impl App {
    /// Binds every listener, then starts workers and servers. Each shard runs
    /// the service graph, then the `extra` consumers (tests, embedders); in
    /// agent mode they run only with `exporters.forward.keep_local_graph`.
    pub async fn start(config: &ValidConfig, extra: &ConsumerFactory) -> Result<Self, AppError> {
        let sections = &config.sections;
        ensure_data_dir(&config.storage.data_dir)?;
        let otlp = &config.receivers.otlp;
        // Bind first, so a taken port fails startup before any task runs.
        let grpc_listener = match otlp.grpc.enabled {
            true => Some(bind("otlp_grpc", otlp.grpc.listen).await?),
            false => None,
        };
        let http_listener = match otlp.http.enabled {
            true => Some(bind("otlp_http", otlp.http.listen).await?),
            false => None,
        };
        let api_listener = bind("api", config.api.listen).await?;
        let addrs = BoundAddrs {
            grpc: grpc_listener.as_ref().map(local_addr),
            http: http_listener.as_ref().map(local_addr),
            api: local_addr(&api_listener),
        };

        let mut registry = Registry::default();
        let receiver_metrics = ReceiverMetrics::register(&mut registry);
        let exporter_metrics = ExporterMetrics::register(&mut registry);
        let xray_queue = &config.exporters.xray.queue;
        let xray_disk =
            (xray_queue.durability(config.storage.enabled) == Durability::Disk).then(|| {
                xray_queue.settings(
                    &config.storage.data_dir,
                    xray::EXPORTER,
                    xray::MAX_DOCUMENT_AGE,
                )
            });
        let xray = match config.exporters.xray.enabled {
            true => Some(
                XrayExporter::start(&sections.xray, &exporter_metrics, xray_disk)
                    .await
                    .map_err(AppError::Xray)?,
            ),
            false => None,
        };
        let graph = Graph::new(sections.graph.clone(), config.pipeline.worker_count());
        registry.register_collector(Box::new(ServiceGraphCollector::new(graph.clone())));
        let xray = match xray {
            Some(exporter) if config.exporters.xray.sampling.enabled => {
                let sampling = &config.exporters.xray.sampling;
                let policies = xray::sampling::policies(
                    sampling,
                    Some(graph.clone()),
                    &mut registry,
                    Some(&exporter_metrics),
                )
                .map_err(|err| AppError::Xray(err.into()))?;
                Some(exporter.with_sampling(policies, config.pipeline.worker_count()))
            }
            other => other,
        };
        let store_metrics = StoreMetrics::register(&mut registry);
        let store = open_store(config, &graph, store_metrics).await;
        let history = History::new(graph.clone(), store);
        let cloudwatch_config = &config.exporters.cloudwatch;
        let cloudwatch_disk = (cloudwatch_config.queue.durability(config.storage.enabled)
            == Durability::Disk)
            .then(|| {
                cloudwatch_config.queue.settings(
                    &config.storage.data_dir,
                    cloudwatch_config.mode.exporter_label(),
                    cloudwatch::MAX_REQUEST_AGE,
                )
            });
        // Reads the graph; in agent mode only the kept local graph, if any.
        let cloudwatch = match config.exporters.cloudwatch.enabled {
            true => Some(
                CloudWatchExporter::start(
                    &sections.cloudwatch,
                    graph.clone(),
                    &exporter_metrics,
                    &mut registry,
                    cloudwatch_disk,
                )
                .await
                .map_err(AppError::CloudWatch)?,
            ),
            false => None,
        };
        let shard_graph = graph.clone();
        let consumers = |shard: usize| {
            let mut consumers: Vec<Box<dyn SpanConsumer>> =
                vec![Box::new(shard_graph.consumer(shard))];
            if let Some(xray) = &xray {
                consumers.push(Box::new(xray.consumer()));
            }
            consumers.extend(extra(shard));
            consumers
        };
        let (mut pipeline, forwarder) = match config.mode {
            Mode::Agent => {
                let forward = &config.exporters.forward;
                let forward_disk = (forward.queue.durability(config.storage.enabled)
                    == Durability::Disk)
                    .then(|| config.storage.data_dir.clone());
                let forwarder = Forwarder::start(
                    &sections.forward,
                    config.pipeline.enqueue_timeout,
                    &mut registry,
                    &exporter_metrics,
                    forward_disk,
                )
                .await?;
                let local: Option<&dyn Fn(usize) -> Vec<Box<dyn SpanConsumer>>> =
                    forward.keep_local_graph.then_some(&consumers);
                let pipeline = Pipeline::start_forwarding(
                    &sections.pipeline,
                    local,
                    Arc::new(forwarder.handle()),
                    &mut registry,
                );
                (pipeline, Some(forwarder))
            }
            Mode::Standalone | Mode::Gateway => (
                Pipeline::start(&sections.pipeline, &consumers, &mut registry),
                None,
            ),
        };
        // The memory gate first: a memory refusal never waits on another gate.
        let memory_limit = MemoryLimit::resolve(config.pipeline.memory_limit);
        memory_limit.log();
        let shrinkers: Vec<Arc<dyn Shrink>> = vec![Arc::new(graph.clone())];
        let memory = MemoryWatcher::start(&memory_limit, &mut pipeline, shrinkers, &mut registry);
        if let Some(xray) = &xray {
            pipeline.add_gate(xray.admission_gate());
            if xray.is_durable() {
                pipeline.acknowledge_consumed();
            }
        }
        let readiness = Arc::new(Readiness::default());
        let stop_receivers = CancellationToken::new();
        let stop_api = CancellationToken::new();

        let mut receivers = Vec::new();
        if let Some(listener) = grpc_listener {
            let service = otlp_grpc::OtlpGrpcService::new(
                &sections.otlp_grpc,
                Arc::new(pipeline.handle()),
                receiver_metrics.clone(),
            );
            let stop = stop_receivers.clone().cancelled_owned();
            let task = tokio::spawn(async move {
                otlp_grpc::serve(listener, service, stop)
                    .await
                    .map_err(|e| e.to_string())
            });
            receivers.push(("otlp_grpc", task));
        }
        if let Some(listener) = http_listener {
            let router = otlp_http::router(
                &sections.otlp_http,
                Arc::new(pipeline.handle()),
                receiver_metrics.clone(),
            );
            let stop = stop_receivers.clone().cancelled_owned();
            let task = tokio::spawn(async move {
                otlp_http::serve(listener, router, stop)
                    .await
                    .map_err(|e| e.to_string())
            });
            receivers.push(("otlp_http", task));
        }
        let api_router = web::router(Arc::new(registry), readiness.clone(), history.clone());
        let api_stop = stop_api.clone().cancelled_owned();
        let api = tokio::spawn(async move {
            axum::serve(api_listener, api_router)
                .with_graceful_shutdown(api_stop)
                .await
        });

        // Listeners are bound and served: ready before anyone reads the
        // "listening" lines and probes.
        readiness.set(true);
        for (component, addr) in [("otlp_grpc", addrs.grpc), ("otlp_http", addrs.http)] {
            if let Some(addr) = addr {
                tracing::info!(component, %addr, "listening");
            }
        }
        tracing::info!(component = "api", addr = %addrs.api, "listening");
        Ok(Self {
            addrs,
            graph,
            history,
            pipeline,
            memory,
            xray,
            cloudwatch,
            forwarder,
            readiness,
            stop_receivers,
            stop_api,
            receivers,
            api,
        })
    }

    /// Stops everything in order, all before `deadline`.
    pub async fn shutdown(self, deadline: Instant) -> Result<DrainReport, AppError> {
        self.readiness.set(false);
        self.stop_receivers.cancel();
        for (component, task) in self.receivers {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok(()))) => tracing::debug!(component, "receiver stopped"),
                Ok(Ok(Err(err))) => tracing::error!(component, error = %err, "receiver failed"),
                Ok(Err(err)) => tracing::error!(component, error = %err, "receiver task panicked"),
                Err(_) => tracing::warn!(component, "receiver did not stop before the deadline"),
            }
        }
        let report = self.pipeline.drain(deadline).await;
        let memory = self.memory;
        if tokio::task::spawn_blocking(move || memory.stop())
            .await
            .is_err()
        {
            tracing::error!("stopping the memory watcher panicked");
        }
        // After the drain: the workers' last spans are queued by now. The
        // store and the exporters flush side by side against one deadline.
        let flush_store = async {
            if let Some(store) = self.history.store().cloned() {
                let graph = self.graph.clone();
                let std_deadline = deadline.into_std();
                let flush = tokio::task::spawn_blocking(move || {
                    graph.flush_to_sink(Instant::now(), unix_minute(std::time::SystemTime::now()));
                    store.close(std_deadline);
                });
                if tokio::time::timeout_at(deadline, flush).await.is_err() {
                    tracing::warn!("history store did not finish writing before the deadline");
                }
            }
        };
        let flush_xray = async {
            if let Some(xray) = self.xray {
                xray.shutdown(deadline).await.log("xray");
            }
        };
        let flush_forward = async {
            if let Some(forwarder) = self.forwarder {
                let dropped = forwarder.shutdown(deadline).await;
                if dropped > 0 {
                    tracing::warn!(dropped, "spans for gateways dropped at shutdown");
                }
            }
        };
        // The graph is final once the pipeline drained: the last minute goes out now.
        let flush_cloudwatch = async {
            if let Some(cloudwatch) = self.cloudwatch {
                cloudwatch.shutdown(deadline).await.log("cloudwatch");
            }
        };
        tokio::join!(flush_store, flush_xray, flush_cloudwatch, flush_forward);
        self.stop_api.cancel();
        if tokio::time::timeout_at(deadline, self.api).await.is_err() {
            tracing::warn!("api server did not stop before the deadline");
        }
        Ok(report?)
    }
}

/// Opens the history store and attaches it to the graph; a store that
/// cannot be used leaves the collector in memory-only mode, never stopped.
async fn open_store(config: &ValidConfig, graph: &Graph, metrics: StoreMetrics) -> Option<Store> {
    let storage = &config.storage;
    if !storage.enabled {
        tracing::info!(
            "history store disabled (storage.enabled = false); windows reach graph.retention"
        );
        return None;
    }
    let (storage, shards, memory) = (
        config.sections.storage.clone(),
        graph.shard_count(),
        config.graph.retention,
    );
    let degraded = metrics.degraded.clone();
    let opened =
        tokio::task::spawn_blocking(move || Store::open(&storage, shards, memory, metrics)).await;
    match opened {
        Ok(Ok(store)) => {
            graph.attach(
                store.sink(),
                Instant::now(),
                unix_minute(std::time::SystemTime::now()),
            );
            tracing::info!(path = %store.path().display(), epoch = store.epoch(), "history store open");
            Some(store)
        }
        Ok(Err(err)) => {
            degraded.set(1);
            tracing::error!(
                error = %crate::store::error_chain(&err),
                "history store unavailable: the graph is kept in memory only (tracemap_store_degraded = 1)"
            );
            None
        }
        Err(err) => {
            degraded.set(1);
            tracing::error!(error = %err, "opening the history store panicked: memory only");
            None
        }
    }
}

async fn bind(component: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind {
            component,
            addr,
            source,
        })
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .expect("bound listener has an address")
}

fn ensure_data_dir(path: &Path) -> Result<(), AppError> {
    let fail = |source| AppError::DataDir {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(path).map_err(fail)?;
    let probe = path.join(".write-check");
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}
