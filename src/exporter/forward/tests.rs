//! The forwarder against in-process gateways (tracemap's own OTLP/gRPC
//! receiver on loopback): placement, integrity, failover and recovery,
//! retries, drops and refusals, membership changes, shutdown.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};

use tonic_types::StatusExt as _;

use super::retry::failure;
use super::*;
use crate::model::{AttributeValue, Attributes, Resource, SpanId, SpanKind, StatusCode, TraceId};
use crate::pipeline::{Pipeline, PipelineConfig, SpanConsumer};
use crate::receiver::ReceiverMetrics;
use crate::receiver::otlp_grpc::{OtlpGrpcConfig, OtlpGrpcService};

type Received = Arc<Mutex<Vec<Span>>>;

struct Recorder(Received);

impl SpanConsumer for Recorder {
    fn consume(&mut self, spans: &[Span]) {
        self.0.lock().unwrap().extend_from_slice(spans);
    }
}

/// Answers the first calls with scripted statuses, then serves OTLP.
#[derive(Clone)]
struct Scripted {
    script: Arc<Mutex<VecDeque<tonic::Status>>>,
    calls: Arc<AtomicU64>,
    inner: OtlpGrpcService,
}

impl tonic::server::NamedService for Scripted {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tower::Service<http::Request<tonic::body::Body>> for Scripted {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(status) = self.script.lock().unwrap().pop_front() {
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let mut inner = self.inner.clone();
        Box::pin(async move { tower::Service::call(&mut inner, req).await })
    }
}

/// A gateway: tracemap's receiver and pipeline, spans recorded.
struct TestGateway {
    addr: SocketAddr,
    received: Received,
    script: Arc<Mutex<VecDeque<tonic::Status>>>,
    calls: Arc<AtomicU64>,
    stop: CancellationToken,
    server: JoinHandle<()>,
    pipeline: Pipeline,
}

impl TestGateway {
    async fn start(addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let received = Received::default();
        let sink = received.clone();
        let factory =
            move |_shard: usize| vec![Box::new(Recorder(sink.clone())) as Box<dyn SpanConsumer>];
        let mut registry = Registry::default();
        let config = PipelineConfig {
            workers: 1,
            ..PipelineConfig::default()
        };
        let pipeline = Pipeline::start(&config.clone().checked(), &factory, &mut registry);
        let service = Scripted {
            script: Arc::default(),
            calls: Arc::default(),
            inner: OtlpGrpcService::new(
                &OtlpGrpcConfig::default().checked(),
                Arc::new(pipeline.handle()),
                ReceiverMetrics::register(&mut registry),
            ),
        };
        let (script, calls) = (service.script.clone(), service.calls.clone());
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let server = tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
                .expect("serve");
        });
        Self {
            addr,
            received,
            script,
            calls,
            stop,
            server,
            pipeline,
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.received.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.server)
            .await
            .expect("gateway stops")
            .unwrap();
        self.pipeline
            .drain(Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
    }
}

/// A loopback port nothing listens on (bound, then released).
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn config(gateways: &[SocketAddr]) -> ForwardConfig {
    ForwardConfig {
        endpoints: gateways.iter().map(ToString::to_string).collect(),
        flush_interval: Duration::from_millis(10),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        ..ForwardConfig::default()
    }
}

async fn start(config: &ForwardConfig) -> Forwarder {
    let mut registry = Registry::default();
    let exporter_metrics = ExporterMetrics::register(&mut registry);
    Forwarder::start(
        &config.clone().checked(),
        Duration::from_millis(100),
        &mut registry,
        &exporter_metrics,
        None,
    )
    .await
    .expect("forwarder starts")
}

/// `traces` traces of three spans each (a client, its server, a database
/// call), two services, events and varied attributes.
fn traces(seed: u64, traces: u64) -> Vec<Span> {
    let resource = |service: &str| {
        Arc::new(Resource::new(Attributes::from_vec(vec![
            (
                "service.name".into(),
                AttributeValue::String(service.into()),
            ),
            (
                "k8s.node.name".into(),
                AttributeValue::String("node-1".into()),
            ),
        ])))
    };
    let (frontend, checkout) = (resource("frontend"), resource("checkout"));
    let mut spans = Vec::new();
    for t in 0..traces {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&rendezvous::gateway_seed(&format!("{seed}/{t}")).to_be_bytes());
        id[8..].copy_from_slice(&(t + 1).to_be_bytes());
        let trace_id = TraceId::from_bytes(id);
        let span = |n: u64, parent: Option<u64>, kind, resource: &Arc<Resource>| Span {
            resource: resource.clone(),
            scope_name: "test".into(),
            trace_id,
            span_id: SpanId::from_bytes((t * 10 + n + 1).to_be_bytes()),
            parent_span_id: parent.map(|p| SpanId::from_bytes((t * 10 + p + 1).to_be_bytes())),
            name: format!("op {n}").into(),
            kind,
            status_code: if t.is_multiple_of(7) {
                StatusCode::Error
            } else {
                StatusCode::Unset
            },
            status_message: String::new(),
            start_unix_nano: 1_700_000_000_000_000_000 + t,
            end_unix_nano: 1_700_000_000_001_000_000 + t,
            attributes: Attributes::from_vec(vec![(
                "http.route".into(),
                AttributeValue::String(format!("/r/{t}")),
            )]),
            events: vec![],
        };
        spans.push(span(0, None, SpanKind::Client, &frontend));
        spans.push(span(1, Some(0), SpanKind::Server, &checkout));
        spans.push(span(2, Some(1), SpanKind::Client, &checkout));
    }
    spans
}

fn by_id(spans: &[Span]) -> BTreeMap<SpanId, Span> {
    spans.iter().map(|s| (s.span_id, s.clone())).collect()
}

/// Waits, at most 10 s, for `done`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn dropped(shared: &Shared, reason: &'static str) -> u64 {
    shared.metrics.dropped(reason).get()
}

fn gateway_up(forwarder: &Forwarder, addr: SocketAddr) -> bool {
    let key = addr.to_string();
    let members = forwarder.shared.members();
    members
        .gateways
        .iter()
        .find(|g| *g.key == key)
        .expect("member")
        .is_up()
}

async fn submit(forwarder: &Forwarder, spans: Vec<Span>) {
    forwarder
        .handle()
        .submit(spans, Instant::now() + Duration::from_secs(5))
        .await
        .expect("admitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_meet_at_their_rendezvous_gateway_intact() {
    let gateways = [
        TestGateway::start("127.0.0.1:0".parse().unwrap()).await,
        TestGateway::start("127.0.0.1:0".parse().unwrap()).await,
        TestGateway::start("127.0.0.1:0".parse().unwrap()).await,
    ];
    let addrs: Vec<SocketAddr> = gateways.iter().map(|g| g.addr).collect();
    let forwarder = start(&config(&addrs)).await;
    let sent = traces(1, 300);
    // Split each trace across requests, as two agents' SDKs would.
    for chunk in sent.chunks(97) {
        submit(&forwarder, chunk.to_vec()).await;
    }
    eventually("all spans delivered", || {
        gateways.iter().map(TestGateway::count).sum::<usize>() == sent.len()
    })
    .await;
    assert_eq!(
        forwarder
            .shutdown(Instant::now() + Duration::from_secs(5))
            .await,
        0
    );

    let keys: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let seeds: Vec<u64> = keys.iter().map(|k| rendezvous::gateway_seed(k)).collect();
    let mut received = Vec::new();
    for (index, gateway) in gateways.iter().enumerate() {
        let spans = gateway.spans();
        assert!(
            spans.len() > sent.len() / 6,
            "gateway {index} got {}",
            spans.len()
        );
        for span in &spans {
            let best = rendezvous::place(trace_hash(&span.trace_id), &seeds, |_| true);
            assert_eq!(best, Some(index), "span on the wrong gateway");
        }
        received.extend(spans);
    }
    // Every field of every span arrived as it was sent.
    assert_eq!(by_id(&received), by_id(&sent));
    for gateway in gateways {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_gateway_fails_over_and_gets_its_traces_back_when_it_returns() {
    let alive = TestGateway::start("127.0.0.1:0".parse().unwrap()).await;
    let down = closed_port().await;
    let forwarder = start(&config(&[alive.addr, down])).await;

    let first = traces(2, 200);
    submit(&forwarder, first.clone()).await;
    eventually("failover delivers everything", || {
        alive.count() == first.len()
    })
    .await;
    assert!(!gateway_up(&forwarder, down));
    assert!(
        forwarder.shared.metrics.rerouted.get() > 0,
        "nothing was rerouted"
    );
    assert_eq!(by_id(&alive.spans()), by_id(&first));

    // The gateway comes back on its address: the probe notices.
    let back = TestGateway::start(down).await;
    eventually("probe marks it up", || gateway_up(&forwarder, down)).await;
    let second = traces(3, 200);
    submit(&forwarder, second.clone()).await;
    eventually("second round delivered", || {
        alive.count() + back.count() == first.len() + second.len()
    })
    .await;
    assert!(back.count() > 0, "traces did not come back");
    let keys = [alive.addr.to_string(), down.to_string()];
    let seeds: Vec<u64> = keys.iter().map(|k| rendezvous::gateway_seed(k)).collect();
    for span in back.spans() {
        assert_eq!(
            rendezvous::place(trace_hash(&span.trace_id), &seeds, |_| true),
            Some(1)
        );
    }
    let shared = forwarder.shared.clone();
    assert_eq!(
        forwarder
            .shutdown(Instant::now() + Duration::from_secs(5))
            .await,
        0
    );
    for reason in drop_reason::ALL {
        assert_eq!(dropped(&shared, reason), 0, "{reason}");
    }
    alive.stop().await;
    back.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_of_the_only_gateway_is_retried_until_it_returns() {
    let addr = closed_port().await;
    let mut config = config(&[addr]);
    config.max_retries = 50;
    let forwarder = start(&config).await;
    let spans = traces(4, 50);
    submit(&forwarder, spans.clone()).await;
    eventually("a few retries", || {
        forwarder.shared.metrics.retries.get() >= 3
    })
    .await;
    assert_eq!(forwarder.shared.metrics.sent.get(), 0);
    let gateway = TestGateway::start(addr).await;
    eventually("delivered after the outage", || {
        gateway.count() == spans.len()
    })
    .await;
    assert_eq!(by_id(&gateway.spans()), by_id(&spans));
    // The gateway queues spans before it answers: wait for the answer.
    eventually("acknowledged", || {
        forwarder.shared.metrics.sent.get() == spans.len() as u64
    })
    .await;
    assert!(forwarder.shared.metrics.failed(failure::UNREACHABLE).get() >= 3);
    let shared = forwarder.shared.clone();
    assert_eq!(
        forwarder
            .shutdown(Instant::now() + Duration::from_secs(5))
            .await,
        0
    );
    assert_eq!(dropped(&shared, drop_reason::RETRIES_EXHAUSTED), 0);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_info_is_honoured_then_the_batch_is_delivered() {
    let gateway = TestGateway::start("127.0.0.1:0".parse().unwrap()).await;
    let busy = || {
        tonic::Status::with_error_details(
            tonic::Code::Unavailable,
            "busy",
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_millis(150))),
        )
    };
    gateway.script.lock().unwrap().extend([busy(), busy()]);
    let forwarder = start(&config(&[gateway.addr])).await;
    let spans = traces(5, 10);
    let began = Instant::now();
    submit(&forwarder, spans.clone()).await;
    eventually("delivered after two refusals", || {
        gateway.count() == spans.len()
    })
    .await;
    // Two waits of the gateway's 150 ms, not the 20 ms initial backoff.
    assert!(
        began.elapsed() >= Duration::from_millis(300),
        "{:?}",
        began.elapsed()
    );
    let metrics = &forwarder.shared.metrics;
    assert_eq!(metrics.retries.get(), 2);
    assert_eq!(metrics.failed(failure::UNAVAILABLE).get(), 2);
    assert!(gateway_up(&forwarder, gateway.addr), "busy is not down");
    assert_eq!(metrics.rerouted.get(), 0);
    assert_eq!(
        forwarder
            .shutdown(Instant::now() + Duration::from_secs(5))
            .await,
        0
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_and_rejections_are_dropped_and_counted() {
    let gateway = TestGateway::start("127.0.0.1:0".parse().unwrap()).await;
    gateway
        .script
        .lock()
        .unwrap()
        .extend([tonic::Status::invalid_argument("bad")]);
    let gone = closed_port().await;
    let mut config = config(&[gateway.addr]);
    config.max_retries = 2;
    let forwarder = start(&config).await;
    submit(&forwarder, traces(6, 4)).await;
    eventually("rejected", || {
        dropped(&forwarder.shared, drop_reason::REJECTED) == 12
    })
    .await;
    assert_eq!(forwarder.shared.metrics.failed(failure::REJECTED).get(), 1);
    forwarder
        .shutdown(Instant::now() + Duration::from_secs(5))
        .await;
    gateway.stop().await;

    let forwarder = start(&ForwardConfig {
        max_retries: 2,
        ..self::config(&[gone])
    })
    .await;
    submit(&forwarder, traces(7, 5)).await;
    eventually("given up", || {
        dropped(&forwarder.shared, drop_reason::RETRIES_EXHAUSTED) == 15
    })
    .await;
    assert_eq!(forwarder.shared.metrics.retries.get(), 2);
    assert_eq!(forwarder.shared.pending(), 0);
    assert_eq!(
        forwarder
            .shutdown(Instant::now() + Duration::from_secs(5))
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_whole_requests_and_shutdown_counts_what_is_left() {
    let gone = closed_port().await;
    let config = ForwardConfig {
        queue_size: 30,
        max_batch: 30,
        max_retries: 1000,
        ..config(&[gone])
    };
    let forwarder = start(&config).await;
    let handle = forwarder.handle();
    let spans = traces(8, 10);
    submit(&forwarder, spans).await;
    let soon = Instant::now() + Duration::from_millis(50);
    let refused = handle.submit(traces(9, 1), soon).await;
    assert!(
        matches!(refused, Err(ForwardError::Full { .. })),
        "{refused:?}"
    );
    let metrics = &forwarder.shared.metrics;
    assert_eq!(metrics.refused(refuse_reason::QUEUE_FULL).get(), 3);
    assert_eq!(forwarder.shared.pending(), 30, "a refusal queues nothing");
    let began = Instant::now();
    let dropped = forwarder
        .shutdown(Instant::now() + Duration::from_millis(500))
        .await;
    assert!(
        began.elapsed() < Duration::from_millis(600),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(dropped, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_batches_are_split_below_the_request_limit() {
    let gateway = TestGateway::start("127.0.0.1:0".parse().unwrap()).await;
    let config = ForwardConfig {
        max_request_bytes: 2048,
        flush_interval: Duration::from_millis(100),
        ..config(&[gateway.addr])
    };
    let forwarder = start(&config).await;
    let spans = traces(10, 40);
    submit(&forwarder, spans.clone()).await;
    eventually("all delivered", || gateway.count() == spans.len()).await;
    let mut whole = Vec::new();
    encode::encode_request(&spans, &mut whole);
    let calls = gateway.calls.load(Ordering::Relaxed) as usize;
    assert!(
        whole.len() > 4 * 2048 && calls >= whole.len() / 2048,
        "{calls} requests for {} bytes",
        whole.len()
    );
    assert_eq!(by_id(&gateway.spans()), by_id(&spans));
    assert_eq!(
        forwarder
            .shutdown(Instant::now() + Duration::from_secs(5))
            .await,
        0
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_leaving_the_set_hands_its_queue_to_the_others() {
    let stays = TestGateway::start("127.0.0.1:0".parse().unwrap()).await;
    let leaves = TestGateway::start("127.0.0.1:0".parse().unwrap()).await;
    let config = ForwardConfig {
        // Spans wait in the queues until the membership change.
        flush_interval: Duration::from_secs(60),
        ..config(&[stays.addr, leaves.addr])
    };
    let forwarder = start(&config).await;
    let spans = traces(11, 100);
    submit(&forwarder, spans.clone()).await;
    let shared = forwarder.shared.clone();
    assert_eq!(shared.pending(), spans.len());
    shared
        .set_members(BTreeSet::from([stays.addr.to_string()]))
        .unwrap();
    eventually("the leaving gateway's spans move", || {
        shared.metrics.rerouted.get() > 0
            && shared.members().gateways.len() == 1
            && shared
                .metrics
                .queue_depth
                .get_or_create(&ForwardMetrics::gateway_labels(&leaves.addr.to_string()))
                .get()
                == 0
    })
    .await;
    assert_eq!(leaves.count(), 0);
    // What remains is flushed at shutdown, all to the gateway that stayed.
    assert_eq!(
        forwarder
            .shutdown(Instant::now() + Duration::from_secs(5))
            .await,
        0
    );
    assert_eq!(by_id(&stays.spans()), by_id(&spans));
    stays.stop().await;
    leaves.stop().await;
}

#[tokio::test]
async fn dns_names_resolve_to_gateway_keys() {
    let mut registry = Registry::default();
    let exporter_metrics = ExporterMetrics::register(&mut registry);
    let metrics = ForwardMetrics::register(&mut registry, &exporter_metrics);
    // From /etc/hosts: no query leaves the machine.
    let keys = resolve("localhost:4317", &metrics).await.unwrap();
    assert!(keys.contains("127.0.0.1:4317"), "{keys:?}");
    let keys = resolve("127.0.0.1:4317", &metrics).await.unwrap();
    assert_eq!(keys, BTreeSet::from(["127.0.0.1:4317".to_owned()]));
    // No port: refused before any lookup, counted, the set kept.
    assert!(resolve("gateways", &metrics).await.is_none());
    assert_eq!(metrics.resolve_failed.get(), 1);
}

/// The forwarder with `durability: disk` under `data_dir`, and its metrics.
async fn start_on_disk(
    config: &ForwardConfig,
    data_dir: &std::path::Path,
) -> (Forwarder, Arc<ExporterMetrics>) {
    let mut registry = Registry::default();
    let exporter_metrics = ExporterMetrics::register(&mut registry);
    let forwarder = Forwarder::start(
        &config.clone().checked(),
        Duration::from_millis(100),
        &mut registry,
        &exporter_metrics,
        Some(data_dir.to_owned()),
    )
    .await
    .expect("forwarder starts");
    (forwarder, exporter_metrics)
}

fn disk_waiting(forwarder: &Forwarder) -> u64 {
    let members = forwarder.shared.members();
    members
        .gateways
        .iter()
        .map(|g| g.disk_unacknowledged_spans())
        .sum()
}

/// Spans committed while the only gateway is unreachable are on disk when
/// the client is answered, not in memory; a shutdown then leaves them
/// there (not counted as dropped) and is quick.
async fn write_while_down(config: &ForwardConfig, dir: &std::path::Path, spans: &[Span]) {
    let (forwarder, metrics) = start_on_disk(config, dir).await;
    for chunk in spans.chunks(7) {
        submit(&forwarder, chunk.to_vec()).await;
    }
    assert_eq!(forwarder.shared.pending(), 0, "nothing waits in memory");
    let disk = metrics.exporter(EXPORTER).disk();
    assert!(disk.records.get() > 0, "records written before the answer");
    eventually("the gateway seen down", || {
        forwarder.shared.metrics.failed(failure::UNREACHABLE).get() > 0
    })
    .await;
    assert_eq!(forwarder.shared.metrics.sent.get(), 0);
    let began = Instant::now();
    let dropped = forwarder
        .shutdown(Instant::now() + Duration::from_secs(5))
        .await;
    assert_eq!(dropped, 0, "records on disk are not lost");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "a down gateway does not hold the shutdown: {:?}",
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_records_wait_for_their_gateway_and_are_sent_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let gone = closed_port().await;
    let config = config(&[gone]);
    let sent = traces(30, 20);
    write_while_down(&config, dir.path(), &sent).await;
    assert!(
        dir.path()
            .join("queue")
            .join(durable::dir_name(&gone.to_string()))
            .is_dir()
    );

    let gateway = TestGateway::start(gone).await;
    let (forwarder, metrics) = start_on_disk(&config, dir.path()).await;
    eventually("the backlog delivered", || gateway.count() == sent.len()).await;
    let disk = metrics.exporter(EXPORTER).disk();
    assert_eq!(disk.replayed.get(), sent.len() as u64);
    // The gateway holds them a moment before the answer is counted.
    eventually("counted as sent", || {
        forwarder.shared.metrics.sent.get() == sent.len() as u64
    })
    .await;
    eventually("acknowledged", || disk.records.get() == 0).await;
    assert_eq!(disk_waiting(&forwarder), 0);
    assert_eq!(by_id(&gateway.spans()), by_id(&sent), "intact, each once");
    assert_eq!(
        forwarder
            .shutdown(Instant::now() + Duration::from_secs(5))
            .await,
        0
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_records_of_a_gateway_no_longer_listed_are_placed_again() {
    let dir = tempfile::tempdir().unwrap();
    let gone = closed_port().await;
    let sent = traces(31, 20);
    write_while_down(&config(&[gone]), dir.path(), &sent).await;

    let gateways = [
        TestGateway::start("127.0.0.1:0".parse().unwrap()).await,
        TestGateway::start("127.0.0.1:0".parse().unwrap()).await,
    ];
    let addrs: Vec<SocketAddr> = gateways.iter().map(|g| g.addr).collect();
    let (forwarder, _) = start_on_disk(&config(&addrs), dir.path()).await;
    eventually("the former gateway's spans delivered", || {
        gateways.iter().map(TestGateway::count).sum::<usize>() == sent.len()
    })
    .await;
    let orphan = dir
        .path()
        .join("queue")
        .join(durable::dir_name(&gone.to_string()));
    assert!(!orphan.exists(), "the emptied queue is removed");
    assert_eq!(forwarder.shared.metrics.rerouted.get(), sent.len() as u64);
    // Placed by trace id over the current gateways, as new spans would be.
    let seeds: Vec<u64> = addrs
        .iter()
        .map(|a| rendezvous::gateway_seed(&a.to_string()))
        .collect();
    for (index, gateway) in gateways.iter().enumerate() {
        for span in gateway.spans() {
            let best = rendezvous::place(trace_hash(&span.trace_id), &seeds, |_| true);
            assert_eq!(best, Some(index));
        }
    }
    forwarder
        .shutdown(Instant::now() + Duration::from_secs(5))
        .await;
    for gateway in gateways {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_disk_queue_falls_back_to_memory() {
    let dir = tempfile::tempdir().unwrap();
    // The data directory is a file: no queue directory can be made in it.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let gateway = TestGateway::start("127.0.0.1:0".parse().unwrap()).await;
    let (forwarder, metrics) = start_on_disk(&config(&[gateway.addr]), &file).await;
    let sent = traces(32, 10);
    submit(&forwarder, sent.clone()).await;
    eventually("delivered from memory", || gateway.count() == sent.len()).await;
    let errors = metrics
        .disk_errors
        .get_or_create(&crate::exporter::ReasonLabels {
            exporter: EXPORTER,
            reason: "io",
        })
        .get();
    assert_eq!(errors, 1, "counted once, for the one gateway");
    eventually("settled in memory", || forwarder.shared.pending() == 0).await;
    assert_eq!(metrics.exporter(EXPORTER).disk().records.get(), 0);
    forwarder
        .shutdown(Instant::now() + Duration::from_secs(5))
        .await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_records_of_a_gateway_leaving_the_set_are_placed_again() {
    let dir = tempfile::tempdir().unwrap();
    let stays = TestGateway::start("127.0.0.1:0".parse().unwrap()).await;
    let gone = closed_port().await;
    let (forwarder, metrics) = start_on_disk(&config(&[stays.addr, gone]), dir.path()).await;
    let spans = traces(33, 100);
    submit(&forwarder, spans.clone()).await;
    let shared = forwarder.shared.clone();
    eventually("the unreachable gateway seen down", || {
        shared.metrics.failed(failure::UNREACHABLE).get() > 0
    })
    .await;
    let seeds = [stays.addr, gone].map(|a| rendezvous::gateway_seed(&a.to_string()));
    let for_gone = spans
        .iter()
        .filter(|s| rendezvous::place(trace_hash(&s.trace_id), &seeds, |_| true) == Some(1))
        .count();
    assert!(for_gone > 0, "some spans wait for the other gateway");
    shared
        .set_members(BTreeSet::from([stays.addr.to_string()]))
        .unwrap();
    eventually("its records delivered by the one that stayed", || {
        stays.count() == spans.len()
    })
    .await;
    assert_eq!(shared.metrics.rerouted.get(), for_gone as u64);
    assert_eq!(by_id(&stays.spans()), by_id(&spans));
    eventually("acknowledged", || {
        metrics.exporter(EXPORTER).disk().records.get() == 0
    })
    .await;
    assert_eq!(
        forwarder
            .shutdown(Instant::now() + Duration::from_secs(5))
            .await,
        0
    );
    stays.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_queue_near_its_budget_refuses_instead_of_dropping() {
    let dir = tempfile::tempdir().unwrap();
    let gone = closed_port().await;
    let mut config = config(&[gone]);
    config.queue.disk_budget = 1024 * 1024;
    let (forwarder, metrics) = start_on_disk(&config, dir.path()).await;
    let handle = forwarder.handle();
    let mut refused = None;
    for seed in 0..2_000 {
        let soon = Instant::now() + Duration::from_millis(100);
        if let Err(err) = handle.submit(traces(1_000 + seed, 100), soon).await {
            refused = Some(err);
            break;
        }
    }
    assert!(
        matches!(refused, Some(ForwardError::Full { .. })),
        "{refused:?}"
    );
    let disk = metrics.exporter(EXPORTER).disk();
    assert!(disk.bytes.get() >= 1024 * 1024 / 10 * 9);
    assert!(disk.bytes.get() <= 1024 * 1024 + 64 * 1024);
    assert_eq!(disk.dropped_budget.get(), 0, "refused, nothing dropped");
    assert_eq!(forwarder.shared.pending(), 0);
    forwarder
        .shutdown(Instant::now() + Duration::from_secs(5))
        .await;
}
