//! The pool of pre-encoded requests: realistic traces built once, before
//! the clock starts, with the offsets of every trace id for the per-round
//! rewrite.

use super::*;

/// What the pool holds.
pub(super) struct PoolSpec {
    /// Full-size requests.
    pub(super) requests: usize,
    pub(super) batch_size: usize,
    /// A shorter last request for `--max-spans`: its request number and spans.
    pub(super) tail: Option<(u64, usize)>,
    pub(super) services: usize,
    pub(super) seed: u64,
    pub(super) error_probability: f64,
}

/// One pre-encoded request.
pub(super) struct Entry {
    pub(super) bytes: Bytes,
    pub(super) spans: u32,
    /// Where each span's trace id starts in `bytes`, in order.
    pub(super) trace_id_offsets: Arc<[u32]>,
}

/// The pre-encoded requests a run recycles.
pub(super) struct Pool {
    pub(super) entries: Vec<Entry>,
    /// The last, shorter request of a `--max-spans` run, and its number.
    pub(super) tail: Option<(u64, Entry)>,
}

impl Pool {
    pub(super) fn generate(spec: &PoolSpec) -> Result<Self, FramingError> {
        let app = App::new(spec.services, spec.error_probability);
        let mut traces = TraceSource {
            rng: Rng::new(spec.seed),
            low_seed: mix64(spec.seed ^ 0x5EED),
            next_trace: 0,
            // A minute back, so no trace of the pool starts in the future.
            base_nanos: time_seed().saturating_sub(60_000_000_000),
        };
        let encode = |traces: &mut TraceSource, spans: usize| {
            let request = traces.request(&app, spans);
            let bytes = request.encode_to_vec();
            let trace_id_offsets = trace_id_offsets(&bytes)?;
            Ok::<_, FramingError>(Entry {
                bytes: bytes.into(),
                spans: spans as u32,
                trace_id_offsets: trace_id_offsets.into(),
            })
        };
        let mut entries = Vec::with_capacity(spec.requests);
        for _ in 0..spec.requests {
            entries.push(encode(&mut traces, spec.batch_size)?);
        }
        let tail = match spec.tail {
            Some((seq, spans)) => Some((seq, encode(&mut traces, spans)?)),
            None => None,
        };
        Ok(Self { entries, tail })
    }

    /// The entry for request `seq` and its round's trace-id mask.
    pub(super) fn entry(&self, seq: u64) -> (&Entry, u64) {
        if let Some((tail_seq, tail)) = &self.tail
            && (seq == *tail_seq || self.entries.is_empty())
        {
            return (tail, 0);
        }
        let len = self.entries.len() as u64;
        (&self.entries[(seq % len) as usize], round_mask(seq / len))
    }

    pub(super) fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes.len() as u64).sum()
    }

    pub(super) fn bytes_per_span(&self) -> f64 {
        let spans: u64 = self.entries.iter().map(|e| u64::from(e.spans)).sum();
        self.bytes() as f64 / spans.max(1) as f64
    }
}

/// The generator's own encoding is not what the offset walk expects (a bug).
#[derive(Debug, thiserror::Error)]
pub(super) enum FramingError {
    #[error("bad framing: {0}")]
    Wire(#[from] ReadError),
    #[error("{0}")]
    Shape(&'static str),
}

/// Offsets of the high eight bytes of every span's trace id in an encoded
/// `ExportTraceServiceRequest`, found by walking the protobuf framing:
/// request.resource_spans → scope_spans → spans → trace_id.
pub(super) fn trace_id_offsets(buf: &[u8]) -> Result<Vec<u32>, FramingError> {
    let mut offsets = Vec::new();
    for resource_spans in fields(Reader::new(buf), tag::REQUEST_RESOURCE_SPANS)? {
        for scope_spans in fields(resource_spans, tag::RESOURCE_SPANS_SCOPE_SPANS)? {
            for span in fields(scope_spans, tag::SCOPE_SPANS_SPANS)? {
                for trace_id in fields(span, tag::SPAN_TRACE_ID)? {
                    if trace_id.rest().len() != 16 {
                        return Err(FramingError::Shape("trace id is not 16 bytes"));
                    }
                    let offset = u32::try_from(trace_id.pos())
                        .map_err(|_| FramingError::Shape("request over 4 GiB"))?;
                    offsets.push(offset);
                }
            }
        }
    }
    Ok(offsets)
}

/// The length-delimited fields numbered `wanted` in `message`, as readers
/// whose offsets are those of the whole request.
pub(super) fn fields(mut message: Reader<'_>, wanted: u32) -> Result<Vec<Reader<'_>>, ReadError> {
    let mut found = Vec::new();
    while let Some((_, field, wire_type)) = message.next_key()? {
        if field == wanted && wire_type == WireType::LengthDelimited {
            found.push(message.nested("loadgen field", wire_type)?);
        } else {
            message.skip(field, wire_type, RECURSION_LIMIT)?;
        }
    }
    Ok(found)
}

/// A database a service owns.
pub(super) struct Database {
    pub(super) system: &'static str,
    pub(super) namespace: String,
    pub(super) address: String,
    pub(super) port: i64,
}

/// A service of the generated application.
pub(super) struct Service {
    pub(super) name: String,
    pub(super) address: String,
    pub(super) resource: Resource,
    pub(super) database: Option<Database>,
}

/// The generated application: service 0 is the entry point and service `i`
/// calls only services after it, so the map is a DAG like real shops.
pub(super) struct App {
    pub(super) services: Vec<Service>,
    /// Probability that a call (both of its spans) or a root span fails.
    pub(super) error_probability: f64,
}

pub(super) const SERVICE_NAMES: &[&str] = &[
    "frontend",
    "checkout",
    "cart",
    "catalog",
    "payment",
    "shipping",
    "inventory",
    "orders",
    "users",
    "recommendation",
    "pricing",
    "notification",
];

pub(super) const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15",
];

impl App {
    pub(super) fn new(count: usize, error_probability: f64) -> Self {
        let services = (0..count)
            .map(|i| {
                let name = SERVICE_NAMES
                    .get(i)
                    .map_or_else(|| format!("service-{i}"), |n| (*n).to_owned());
                let address = format!("{name}.shop.svc.cluster.local");
                // The entry point has no database; others alternate
                // postgresql, redis and none.
                let database = match i % 3 {
                    _ if i == 0 => None,
                    1 => Some(Database {
                        system: "postgresql",
                        namespace: format!("{name}_db"),
                        address: format!("{name}-db.shop.svc.cluster.local"),
                        port: 5432,
                    }),
                    2 => Some(Database {
                        system: "redis",
                        namespace: "0".into(),
                        address: format!("{name}-cache.shop.svc.cluster.local"),
                        port: 6379,
                    }),
                    _ => None,
                };
                let resource = kit::resource(vec![
                    kit::string("service.name", &name),
                    kit::string("service.namespace", "shop"),
                    kit::string("service.version", "1.8.2"),
                    kit::string("telemetry.sdk.language", "rust"),
                ]);
                Service {
                    name,
                    address,
                    resource,
                    database,
                }
            })
            .collect();
        Self {
            services,
            error_probability,
        }
    }
}

/// A span and the index of the service that emitted it.
pub(super) struct Emitted {
    pub(super) service: usize,
    pub(super) span: Span,
}

/// Produces traces with ids unique across the pool.
pub(super) struct TraceSource {
    pub(super) rng: Rng,
    /// Scrambles the low half of trace ids, so runs with different seeds differ.
    pub(super) low_seed: u64,
    pub(super) next_trace: u64,
    pub(super) base_nanos: u64,
}

impl TraceSource {
    /// A request of exactly `spans` spans: whole traces, the last one cut
    /// short. Spans are made parent-first, so a cut never keeps a SERVER
    /// span without its CLIENT parent.
    pub(super) fn request(&mut self, app: &App, spans: usize) -> ExportTraceServiceRequest {
        let mut emitted = Vec::with_capacity(spans + 32);
        // Every trace has at least one span, so this runs at most `spans` times.
        while emitted.len() < spans {
            self.trace(app, &mut emitted);
        }
        emitted.truncate(spans);
        let mut by_service: Vec<Vec<Span>> = (0..app.services.len()).map(|_| Vec::new()).collect();
        for e in emitted {
            by_service[e.service].push(e.span);
        }
        let scope = kit::scope("tracemap-loadgen", env!("CARGO_PKG_VERSION"));
        let mut request = RequestBuilder::new();
        for (i, spans) in by_service.into_iter().enumerate() {
            if !spans.is_empty() {
                let resource = Some(app.services[i].resource.clone());
                request = request.resource_spans(resource, Some(scope.clone()), spans);
            }
        }
        request.build()
    }

    pub(super) fn trace(&mut self, app: &App, out: &mut Vec<Emitted>) {
        // High half random, low half a scrambled counter: unique in the pool,
        // and the high half is what each round's mask changes.
        let low = mix64(self.low_seed.wrapping_add(self.next_trace));
        self.next_trace += 1;
        let mut trace_id = [0; 16];
        trace_id[..8].copy_from_slice(&self.rng.u64().to_be_bytes());
        trace_id[8..].copy_from_slice(&low.to_be_bytes());
        let start = self.base_nanos + self.next_trace * 10_000;
        let duration = 5_000_000 + self.rng.below(120_000_000);
        let error = self.rng.chance(app.error_probability);
        let user_agent = *self.rng.pick(USER_AGENTS);
        let mut builder = TraceBuilder {
            rng: &mut self.rng,
            app,
            trace_id,
            out,
        };
        builder.server(0, None, (start, start + duration), error, user_agent, 0);
    }
}

/// Builds one trace's spans, parent first.
pub(super) struct TraceBuilder<'a> {
    pub(super) rng: &'a mut Rng,
    pub(super) app: &'a App,
    pub(super) trace_id: [u8; 16],
    pub(super) out: &'a mut Vec<Emitted>,
}

pub(super) const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/{service}/{id}"),
    ("GET", "/api/{service}"),
    ("POST", "/api/{service}"),
    ("PUT", "/api/{service}/{id}"),
];

impl TraceBuilder<'_> {
    pub(super) fn span_id(&mut self) -> [u8; 8] {
        (self.rng.u64() | 1).to_be_bytes()
    }

    /// A SERVER span in `service` and, below it, its outgoing calls.
    pub(super) fn server(
        &mut self,
        service: usize,
        parent: Option<[u8; 8]>,
        (start, end): (u64, u64),
        error: bool,
        user_agent: &str,
        depth: u32,
    ) {
        let app = self.app;
        let svc = &app.services[service];
        let (method, route_template) = *self.rng.pick(ROUTES);
        let route = route_template.replace("{service}", &svc.name);
        let id = 1000 + self.rng.below(90_000);
        let path = route.replace("{id}", &id.to_string());
        let status_code = if error {
            500
        } else if method == "POST" {
            201
        } else {
            200
        };
        let span_id = self.span_id();
        self.out.push(Emitted {
            service,
            span: SpanBuilder::new(&self.trace_id, &span_id)
                .parent(parent.as_ref().map_or(&[][..], |p| &p[..]))
                .name(&format!("{method} {route}"))
                .kind(SpanKind::Server)
                .times(start, end)
                .attributes(vec![
                    kit::string("http.request.method", method),
                    kit::string("url.path", &path),
                    kit::string("url.scheme", "http"),
                    kit::string("http.route", &route),
                    kit::int("http.response.status_code", status_code),
                    kit::string("server.address", &svc.address),
                    kit::int("server.port", 8080),
                    kit::string("user_agent.original", user_agent),
                ])
                .error_if(error, "internal server error")
                .build(),
        });
        let downstream = app.services.len() - service - 1;
        if depth >= MAX_CALL_DEPTH || downstream == 0 {
            self.database(service, span_id, (start, end));
            return;
        }
        // The entry point always calls on; deeper services call 0–2 others.
        let calls = if service == 0 {
            1 + self.rng.below(2)
        } else {
            self.rng.below(3)
        };
        let slot = (end - start) / (calls + 2);
        for call in 0..calls {
            let callee = service + 1 + self.rng.below(downstream as u64) as usize;
            let call_start = start + slot * (call + 1);
            let call_error = self.rng.chance(self.app.error_probability);
            self.client(
                service,
                callee,
                span_id,
                (call_start, call_start + slot),
                call_error,
                depth,
            );
        }
        self.database(service, span_id, (start, end));
    }

    /// A CLIENT span in `caller` and the SERVER span it causes in `callee`.
    pub(super) fn client(
        &mut self,
        caller: usize,
        callee: usize,
        parent: [u8; 8],
        (start, end): (u64, u64),
        error: bool,
        depth: u32,
    ) {
        let app = self.app;
        let target = &app.services[callee];
        let method = if self.rng.chance(0.8) { "GET" } else { "POST" };
        let id = 1000 + self.rng.below(90_000);
        let url = format!("http://{}:8080/api/{}/{id}", target.address, target.name);
        let span_id = self.span_id();
        self.out.push(Emitted {
            service: caller,
            span: SpanBuilder::new(&self.trace_id, &span_id)
                .parent(&parent)
                .name(method)
                .kind(SpanKind::Client)
                .times(start, end)
                .attributes(vec![
                    kit::string("http.request.method", method),
                    kit::string("url.full", &url),
                    kit::string("server.address", &target.address),
                    kit::int("server.port", 8080),
                    kit::int("http.response.status_code", if error { 503 } else { 200 }),
                    kit::string("peer.service", &target.name),
                    kit::string("network.protocol.version", "1.1"),
                ])
                .error_if(error, "upstream failed")
                .build(),
        });
        // The network takes a little off each side of the server's time.
        let lag = ((end - start) / 20).min(500_000);
        let ua = "okhttp/4.12.0";
        self.server(
            callee,
            Some(span_id),
            (start + lag, end - lag),
            error,
            ua,
            depth + 1,
        );
    }

    /// Sometimes, a query from `service` to its database.
    pub(super) fn database(&mut self, service: usize, parent: [u8; 8], (start, end): (u64, u64)) {
        let app = self.app;
        let Some(db) = &app.services[service].database else {
            return;
        };
        if !self.rng.chance(0.6) {
            return;
        }
        let error = self.rng.chance(self.app.error_probability);
        let table = &app.services[service].name;
        // Redis has no tables, and its db.namespace is a bare index ("0")
        // that would give every cache the same node: peer.service names it.
        let (operation, query, name, target) = match db.system {
            "redis" => (
                "GET",
                format!("GET {table}:session"),
                "GET".to_owned(),
                kit::string("peer.service", &format!("{table}-cache")),
            ),
            _ => (
                "SELECT",
                format!("SELECT id, status, total FROM {table} WHERE id = $1"),
                format!("SELECT {table}"),
                kit::string("db.collection.name", table),
            ),
        };
        let db_start = start + (end - start) / 10;
        let db_end = db_start + (end - start) / 10;
        let span_id = self.span_id();
        self.out.push(Emitted {
            service,
            span: SpanBuilder::new(&self.trace_id, &span_id)
                .parent(&parent)
                .name(&name)
                .kind(SpanKind::Client)
                .times(db_start, db_end)
                .attributes(vec![
                    kit::string("db.system", db.system),
                    kit::string("db.namespace", &db.namespace),
                    kit::string("db.operation.name", operation),
                    kit::string("db.query.text", &query),
                    target,
                    kit::string("server.address", &db.address),
                    kit::int("server.port", db.port),
                ])
                .error_if(error, "query failed")
                .build(),
        });
    }
}
