//! The simulated shop: its services, what each request does, how long each
//! step takes and how often it fails.
//!
//! Planning is pure: [`Planner::trace`] returns one user request as a tree
//! of [`Op`]s timed from the trace start, and `otel.rs` turns the tree into
//! spans through the OpenTelemetry SDK. Latencies are drawn, not slept, so
//! the demo costs little CPU however slow the simulated calls are.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

use crate::cli::draw::Rng;

/// An instrumented service of the shop; each has its own tracer provider
/// and `service.name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// The web front end; every trace starts here.
    Frontend,
    /// Shopping carts, kept in Redis.
    Cart,
    /// Products, kept in PostgreSQL.
    Catalog,
    /// Places orders: the longest chain of calls.
    Checkout,
    /// Suggestions shown beside products.
    Recommendation,
    /// Currency conversion.
    Currency,
    /// Charges cards, over HTTP.
    Payment,
    /// Quotes and ships through an external carrier API.
    Shipping,
    /// Consumes orders from Kafka and mails a confirmation.
    Email,
    /// Consumes orders from Kafka and updates their status.
    Fulfillment,
}

impl Service {
    /// Every simulated service.
    pub const ALL: [Self; 10] = [
        Self::Frontend,
        Self::Cart,
        Self::Catalog,
        Self::Checkout,
        Self::Recommendation,
        Self::Currency,
        Self::Payment,
        Self::Shipping,
        Self::Email,
        Self::Fulfillment,
    ];

    /// The `service.name` resource attribute.
    pub fn name(self) -> &'static str {
        match self {
            Self::Frontend => "frontend",
            Self::Cart => "cart",
            Self::Catalog => "catalog",
            Self::Checkout => "checkout",
            Self::Recommendation => "recommendation",
            Self::Currency => "currency",
            Self::Payment => "payment",
            Self::Shipping => "shipping",
            Self::Email => "email",
            Self::Fulfillment => "fulfillment",
        }
    }

    /// The gRPC service it implements, as `rpc.service`.
    fn rpc_service(self) -> &'static str {
        match self {
            Self::Cart => "shop.CartService",
            Self::Catalog => "shop.CatalogService",
            Self::Checkout => "shop.CheckoutService",
            Self::Recommendation => "shop.RecommendationService",
            Self::Currency => "shop.CurrencyService",
            Self::Shipping => "shop.ShippingService",
            Self::Frontend | Self::Payment | Self::Email | Self::Fulfillment => "shop.Unused",
        }
    }

    fn port(self) -> i64 {
        match self {
            Self::Frontend => 443,
            Self::Payment => 8080,
            _ => 50051,
        }
    }
}

/// Why an operation failed: the span gets status ERROR with `message`, and
/// an `exception` event when the failure was raised (not just reported) here.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// `exception.type` of the exception event, if this side raised it.
    pub exception: Option<&'static str>,
    /// The status description and `exception.message`.
    pub message: String,
}

/// One planned span: who emits it, its kind and name, when it runs (offsets
/// from the trace start), its attributes, and the spans it causes.
///
/// A child in another service is reached through propagated context (a
/// CLIENT's SERVER, a PRODUCER's CONSUMERs); a child in the same service is
/// an in-process child span.
#[derive(Debug, Clone)]
pub struct Op {
    /// The emitting service.
    pub service: Service,
    /// The span kind.
    pub kind: SpanKind,
    /// The span name.
    pub name: String,
    /// Start, from the trace start.
    pub start: Duration,
    /// End, from the trace start; while planning, the handler's clock.
    pub end: Duration,
    /// Span attributes, current semantic-convention names.
    pub attributes: Vec<KeyValue>,
    /// Set when the span ends with status ERROR.
    pub failure: Option<Failure>,
    /// Spans this one causes.
    pub children: Vec<Op>,
}

impl Op {
    fn new(service: Service, kind: SpanKind, name: impl Into<String>, start: Duration) -> Self {
        Self {
            service,
            kind,
            name: name.into(),
            start,
            end: start,
            attributes: Vec::new(),
            failure: None,
            children: Vec::new(),
        }
    }

    /// Whether the span ends with status ERROR.
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// The latest end in the tree: consumers may finish after the request.
    pub fn extent(&self) -> Duration {
        self.children
            .iter()
            .map(Op::extent)
            .fold(self.end, Duration::max)
    }

    /// Runs `child` synchronously: the clock moves to its end. Returns
    /// whether it failed.
    fn call(&mut self, child: Op) -> bool {
        self.end = self.end.max(child.end);
        let failed = child.failed();
        self.children.push(child);
        failed
    }

    /// Runs `children` concurrently: the clock moves to the last end.
    /// Returns whether any failed.
    fn call_all(&mut self, children: Vec<Op>) -> bool {
        children
            .into_iter()
            .fold(false, |failed, child| self.call(child) | failed)
    }

    /// For a CLIENT op, the service its SERVER child belongs to.
    fn service_called(&self) -> Option<Service> {
        self.children
            .iter()
            .find(|c| c.kind == SpanKind::Server)
            .map(|c| c.service)
    }

    fn raise(&mut self, exception: &'static str, message: impl Into<String>) {
        self.failure = Some(Failure {
            exception: Some(exception),
            message: message.into(),
        });
    }

    fn attr(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        self.attributes.push(KeyValue::new(key, value));
    }
}

/// How often things break, per call.
mod fault {
    pub const PAYMENT: f64 = 0.04;
    pub const CARRIER_TIMEOUT: f64 = 0.02;
    pub const RECOMMENDATION: f64 = 0.02;
    pub const POSTGRES: f64 = 0.005;
    pub const REDIS: f64 = 0.005;
}

/// The carrier API's timeout, also its longest latency.
const CARRIER_TIMEOUT_MS: f64 = 400.0;
const PRODUCTS: [&str; 8] = [
    "SKU-1042", "SKU-1187", "SKU-2203", "SKU-2291", "SKU-3310", "SKU-3378", "SKU-4415", "SKU-5120",
];
const CURRENCIES: [&str; 4] = ["EUR", "USD", "JPY", "GBP"];
const USER_AGENTS: [&str; 3] = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148",
];

/// Plans traces of the simulated shop.
#[derive(Debug, Clone)]
pub struct Planner {
    rng: Rng,
}

/// A server-side handler: gets the SERVER (or CONSUMER) op with its start
/// set, adds its work and calls, and leaves `op.end` at its end.
type Handler = fn(&mut Planner, &mut Op);

impl Planner {
    /// A planner whose traces follow from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
        }
    }

    /// One user request, as the frontend's root SERVER op and everything it
    /// causes. The mix favours browsing over buying, as shops do.
    pub fn trace(&mut self) -> Op {
        let (method, route, path, handler): (_, _, String, Handler) = match self.rng.below(100) {
            0..35 => ("GET", "/", "/".into(), Self::home),
            35..65 => {
                let product = self.rng.pick(&PRODUCTS);
                (
                    "GET",
                    "/product/{id}",
                    format!("/product/{product}"),
                    Self::product_page,
                )
            }
            65..77 => ("GET", "/cart", "/cart".into(), Self::cart_page),
            77..90 => ("POST", "/cart", "/cart".into(), Self::add_to_cart),
            _ => ("POST", "/checkout", "/checkout".into(), Self::place_order),
        };
        let mut root = Op::new(
            Service::Frontend,
            SpanKind::Server,
            format!("{method} {route}"),
            Duration::ZERO,
        );
        self.busy(&mut root, 2.0);
        handler(self, &mut root);
        let status: i64 = if root.failed() { 500 } else { 200 };
        let client_ip = format!("203.0.113.{}", 1 + self.rng.below(254));
        let agent = *self.rng.pick(&USER_AGENTS);
        root.attr("http.request.method", method);
        root.attr("http.route", route);
        root.attr("url.path", path);
        root.attr("url.scheme", "https");
        root.attr("server.address", "shop.example");
        root.attr("server.port", Service::Frontend.port());
        root.attr("client.address", client_ip);
        root.attr("user_agent.original", agent);
        root.attr("http.response.status_code", status);
        root
    }

    // --- frontend pages -------------------------------------------------

    fn home(&mut self, op: &mut Op) {
        let at = op.end;
        let calls = vec![
            self.grpc(
                op,
                Service::Catalog,
                "ListProducts",
                at,
                Self::list_products,
            ),
            self.grpc(
                op,
                Service::Recommendation,
                "ListRecommendations",
                at,
                Self::recommend,
            ),
            self.grpc(
                op,
                Service::Currency,
                "GetSupportedCurrencies",
                at,
                Self::currencies,
            ),
        ];
        let failed = calls
            .iter()
            .filter(|c| c.service_called() != Some(Service::Recommendation))
            .any(Op::failed);
        // Recommendations are optional: the page renders without them.
        op.call_all(calls);
        self.render(op, failed, 25.0);
    }

    fn product_page(&mut self, op: &mut Op) {
        let product = self.grpc(
            op,
            Service::Catalog,
            "GetProduct",
            op.end,
            Self::get_product,
        );
        if op.call(product) {
            return self.render(op, true, 0.0);
        }
        let at = op.end;
        let calls = vec![
            self.grpc(
                op,
                Service::Recommendation,
                "ListRecommendations",
                at,
                Self::recommend,
            ),
            self.grpc(op, Service::Cart, "GetCart", at, Self::get_cart),
            self.grpc(op, Service::Currency, "Convert", at, Self::convert),
        ];
        let failed = calls
            .iter()
            .filter(|c| c.service_called() != Some(Service::Recommendation))
            .any(Op::failed);
        op.call_all(calls);
        self.render(op, failed, 20.0);
    }

    fn cart_page(&mut self, op: &mut Op) {
        let cart = self.grpc(op, Service::Cart, "GetCart", op.end, Self::get_cart);
        if op.call(cart) {
            return self.render(op, true, 0.0);
        }
        let items = 1 + self.rng.below(3);
        for _ in 0..items {
            let product = self.grpc(
                op,
                Service::Catalog,
                "GetProduct",
                op.end,
                Self::get_product,
            );
            if op.call(product) {
                return self.render(op, true, 0.0);
            }
        }
        let convert = self.grpc(op, Service::Currency, "Convert", op.end, Self::convert);
        let failed = op.call(convert);
        self.render(op, failed, 18.0);
    }

    fn add_to_cart(&mut self, op: &mut Op) {
        let add = self.grpc(op, Service::Cart, "AddItem", op.end, Self::add_item);
        let failed = op.call(add);
        self.render(op, failed, 12.0);
    }

    fn place_order(&mut self, op: &mut Op) {
        let order = self.grpc(op, Service::Checkout, "PlaceOrder", op.end, Self::checkout);
        let failed = op.call(order);
        self.render(op, failed, 15.0);
    }

    /// The page's own work, or the error page when a needed call failed.
    fn render(&mut self, op: &mut Op, failed: bool, median_ms: f64) {
        if failed {
            self.busy(op, 1.0);
            op.raise("UpstreamError", "a backend call failed");
        } else {
            op.end += self
                .rng
                .latency(median_ms, 0.7, median_ms / 4.0, median_ms * 8.0);
        }
    }

    // --- backend handlers -------------------------------------------------

    fn list_products(&mut self, op: &mut Op) {
        self.busy(op, 0.5);
        let query = self.postgres(
            op,
            "SELECT",
            "products",
            "SELECT id, name, price FROM products ORDER BY popularity DESC LIMIT $1",
        );
        self.fail_if(op, query);
    }

    fn get_product(&mut self, op: &mut Op) {
        self.busy(op, 0.3);
        let query = self.postgres(
            op,
            "SELECT",
            "products",
            "SELECT id, name, description, price FROM products WHERE id = $1",
        );
        self.fail_if(op, query);
    }

    fn recommend(&mut self, op: &mut Op) {
        self.busy(op, 1.0);
        let products = self.grpc(
            op,
            Service::Catalog,
            "ListProducts",
            op.end,
            Self::list_products,
        );
        if op.call(products) {
            return op.raise("UpstreamError", "catalog unavailable");
        }
        op.end += self.rng.latency(6.0, 0.6, 1.0, 60.0);
        if self.rng.chance(fault::RECOMMENDATION) {
            op.raise("ModelNotLoaded", "recommendation model is still loading");
        }
    }

    fn currencies(&mut self, op: &mut Op) {
        self.busy(op, 0.4);
    }

    fn convert(&mut self, op: &mut Op) {
        self.busy(op, 0.6);
        let to = *self.rng.pick(&CURRENCIES);
        op.attr("app.currency.to", to);
    }

    fn get_cart(&mut self, op: &mut Op) {
        self.busy(op, 0.2);
        let read = self.redis(op, "HGETALL");
        self.fail_if(op, read);
    }

    fn add_item(&mut self, op: &mut Op) {
        self.busy(op, 0.2);
        let write = self.redis(op, "HSET");
        if !self.fail_if(op, write) {
            let expire = self.redis(op, "EXPIRE");
            self.fail_if(op, expire);
        }
    }

    fn empty_cart(&mut self, op: &mut Op) {
        self.busy(op, 0.2);
        let delete = self.redis(op, "DEL");
        self.fail_if(op, delete);
    }

    fn checkout(&mut self, op: &mut Op) {
        self.busy(op, 1.0);
        let cart = self.grpc(op, Service::Cart, "GetCart", op.end, Self::get_cart);
        if op.call(cart) {
            return op.raise("UpstreamError", "cannot read the cart");
        }
        for _ in 0..1 + self.rng.below(3) {
            let product = self.grpc(
                op,
                Service::Catalog,
                "GetProduct",
                op.end,
                Self::get_product,
            );
            if op.call(product) {
                return op.raise("UpstreamError", "cannot price the cart");
            }
        }
        let convert = self.grpc(op, Service::Currency, "Convert", op.end, Self::convert);
        let quote = self.grpc(op, Service::Shipping, "GetQuote", op.end, Self::quote);
        if op.call_all(vec![convert, quote]) {
            return op.raise("UpstreamError", "cannot compute the total");
        }
        let charge = self.http(op, Service::Payment, "POST", "/charge", Self::charge);
        if op.call(charge) {
            return op.raise("PaymentFailed", "payment was not accepted");
        }
        let ship = self.grpc(op, Service::Shipping, "ShipOrder", op.end, Self::ship);
        if op.call(ship) {
            return op.raise("UpstreamError", "cannot ship the order");
        }
        let insert = self.postgres(
            op,
            "INSERT",
            "orders",
            "INSERT INTO orders (id, user_id, total, currency) VALUES ($1, $2, $3, $4)",
        );
        if self.fail_if(op, insert) {
            return;
        }
        let empty = self.grpc(op, Service::Cart, "EmptyCart", op.end, Self::empty_cart);
        op.call(empty);
        self.publish_order(op);
        self.busy(op, 0.5);
    }

    fn quote(&mut self, op: &mut Op) {
        self.busy(op, 0.5);
        let rates = self.carrier(op, "/v1/rates");
        if op.call(rates) {
            op.raise("UpstreamError", "carrier api did not answer");
        }
    }

    fn ship(&mut self, op: &mut Op) {
        self.busy(op, 0.8);
        let shipment = self.carrier(op, "/v1/shipments");
        if op.call(shipment) {
            op.raise("UpstreamError", "carrier api did not answer");
        }
    }

    fn charge(&mut self, op: &mut Op) {
        op.end += self.rng.latency(35.0, 0.5, 8.0, 250.0);
        if self.rng.chance(fault::PAYMENT) {
            op.raise("ProcessorUnavailable", "card processor unavailable");
        }
    }

    fn confirm_by_email(&mut self, op: &mut Op) {
        self.busy(op, 0.5);
        let mut render = Op::new(
            Service::Email,
            SpanKind::Internal,
            "render confirmation",
            op.end,
        );
        render.end += self.rng.latency(4.0, 0.5, 1.0, 40.0);
        op.call(render);
        self.busy(op, 2.0);
    }

    fn fulfil(&mut self, op: &mut Op) {
        self.busy(op, 0.5);
        let update = self.postgres(
            op,
            "UPDATE",
            "orders",
            "UPDATE orders SET status = 'processing' WHERE id = $1",
        );
        self.fail_if(op, update);
    }

    // --- protocols ----------------------------------------------------------

    /// A gRPC call from `caller` to `to`: a CLIENT op around the callee's
    /// SERVER op, a network hop each way.
    fn grpc(
        &mut self,
        caller: &Op,
        to: Service,
        method: &'static str,
        at: Duration,
        handler: Handler,
    ) -> Op {
        let rpc_service = to.rpc_service();
        let name = format!("{rpc_service}/{method}");
        let mut server = Op::new(to, SpanKind::Server, name.clone(), at + self.hop());
        handler(self, &mut server);
        // INTERNAL, as a handler that raised returns it.
        let code: i64 = if server.failed() { 13 } else { 0 };
        let mut client = Op::new(caller.service, SpanKind::Client, name, at);
        for op in [&mut server, &mut client] {
            op.attr("rpc.system", "grpc");
            op.attr("rpc.service", rpc_service);
            op.attr("rpc.method", method);
            op.attr("rpc.grpc.status_code", code);
            op.attr("server.address", to.name());
            op.attr("server.port", to.port());
        }
        if server.failed() {
            client.attr("error.type", "INTERNAL");
            client.failure = Some(Failure {
                exception: None,
                message: "INTERNAL".into(),
            });
        }
        client.end = server.end + self.hop();
        client.children.push(server);
        client
    }

    /// An HTTP call from `caller` to `to`, starting at the caller's clock.
    fn http(
        &mut self,
        caller: &Op,
        to: Service,
        method: &'static str,
        route: &'static str,
        handler: Handler,
    ) -> Op {
        let at = caller.end;
        let mut server = Op::new(
            to,
            SpanKind::Server,
            format!("{method} {route}"),
            at + self.hop(),
        );
        handler(self, &mut server);
        let status: i64 = if server.failed() { 503 } else { 200 };
        server.attr("http.request.method", method);
        server.attr("http.route", route);
        server.attr("url.path", route);
        server.attr("url.scheme", "http");
        server.attr("server.address", to.name());
        server.attr("server.port", to.port());
        server.attr("http.response.status_code", status);
        let mut client = Op::new(caller.service, SpanKind::Client, method, at);
        client.attr("http.request.method", method);
        client.attr(
            "url.full",
            format!("http://{}:{}{route}", to.name(), to.port()),
        );
        client.attr("server.address", to.name());
        client.attr("server.port", to.port());
        client.attr("http.response.status_code", status);
        if server.failed() {
            client.attr("error.type", status.to_string());
            client.failure = Some(Failure {
                exception: None,
                message: format!("http {status}"),
            });
        }
        client.end = server.end + self.hop();
        client.children.push(server);
        client
    }

    /// A call to the carrier's public API, which sends no spans of its own:
    /// only the CLIENT side exists, named by `peer.service`.
    fn carrier(&mut self, caller: &Op, path: &'static str) -> Op {
        let mut client = Op::new(caller.service, SpanKind::Client, "POST", caller.end);
        client.attr("http.request.method", "POST");
        client.attr("url.full", format!("https://api.carrier.example{path}"));
        client.attr("server.address", "api.carrier.example");
        client.attr("server.port", 443_i64);
        client.attr("peer.service", "carrier-api");
        if self.rng.chance(fault::CARRIER_TIMEOUT) {
            client.end += Duration::from_secs_f64(CARRIER_TIMEOUT_MS / 1000.0);
            client.attr("error.type", "timeout");
            client.raise(
                "TimeoutError",
                format!("no answer from api.carrier.example within {CARRIER_TIMEOUT_MS}ms"),
            );
        } else {
            client.end += self
                .rng
                .latency(120.0, 0.45, 50.0, CARRIER_TIMEOUT_MS - 1.0);
            client.attr("http.response.status_code", 200_i64);
        }
        client
    }

    /// A PostgreSQL query by `caller`; returns whether it failed.
    fn postgres(
        &mut self,
        caller: &mut Op,
        operation: &'static str,
        table: &'static str,
        query: &'static str,
    ) -> bool {
        let mut db = Op::new(
            caller.service,
            SpanKind::Client,
            format!("{operation} {table}"),
            caller.end,
        );
        db.end += self.rng.latency(3.0, 0.7, 1.0, 20.0);
        db.attr("db.system.name", "postgresql");
        // The pre-1.26 name, which older service-graph builders still read.
        db.attr("db.system", "postgresql");
        db.attr("db.namespace", "shop");
        db.attr("db.collection.name", table);
        db.attr("db.operation.name", operation);
        db.attr("db.query.text", query);
        db.attr("server.address", "postgres");
        db.attr("server.port", 5432_i64);
        // Names the node "postgres" rather than the database "shop".
        db.attr("peer.service", "postgres");
        if self.rng.chance(fault::POSTGRES) {
            db.attr("error.type", "40P01");
            db.attr("db.response.status_code", "40P01");
            db.raise("DeadlockDetected", "deadlock detected");
        }
        caller.call(db)
    }

    /// A Redis command by `caller`; returns whether it failed.
    fn redis(&mut self, caller: &mut Op, command: &'static str) -> bool {
        let mut db = Op::new(caller.service, SpanKind::Client, command, caller.end);
        db.end += self.rng.latency(0.8, 0.5, 0.2, 10.0);
        let user = self.rng.below(5000);
        db.attr("db.system.name", "redis");
        db.attr("db.system", "redis");
        db.attr("db.namespace", "0");
        db.attr("db.operation.name", command);
        db.attr("db.query.text", format!("{command} cart:user-{user}"));
        db.attr("server.address", "redis");
        db.attr("server.port", 6379_i64);
        db.attr("peer.service", "redis");
        if self.rng.chance(fault::REDIS) {
            db.attr("error.type", "timeout");
            db.raise("TimeoutError", "redis did not answer within 10ms");
            db.end = db.start + Duration::from_millis(10);
        }
        caller.call(db)
    }

    /// Publishes the order to Kafka; the `email` and `fulfillment` consumer
    /// groups each process it, as children of the PRODUCER span.
    fn publish_order(&mut self, op: &mut Op) {
        let order = format!("order-{}", self.rng.below(1_000_000));
        let partition = self.rng.below(6).to_string();
        let mut send = Op::new(op.service, SpanKind::Producer, "send orders", op.end);
        send.end += self.rng.latency(2.0, 0.5, 0.5, 30.0);
        messaging(&mut send, "send", &order, &partition);
        let consumers: [(Service, Handler); 2] = [
            (Service::Email, Self::confirm_by_email),
            (Service::Fulfillment, Self::fulfil),
        ];
        for (service, handler) in consumers {
            // Consumers poll: they start after a short, variable lag.
            let lag = self.rng.latency(15.0, 0.8, 2.0, 250.0);
            let mut consume = Op::new(
                service,
                SpanKind::Consumer,
                "process orders",
                send.end + lag,
            );
            messaging(&mut consume, "process", &order, &partition);
            consume.attr("messaging.consumer.group.name", service.name());
            handler(self, &mut consume);
            send.children.push(consume);
        }
        // The producer returns once Kafka acknowledges, not when consumed.
        op.end = send.end;
        op.children.push(send);
    }

    /// The caller's own work, around `median_ms`.
    fn busy(&mut self, op: &mut Op, median_ms: f64) {
        op.end += self
            .rng
            .latency(median_ms, 0.5, median_ms / 5.0, median_ms * 10.0);
    }

    /// One network hop inside the cluster.
    fn hop(&mut self) -> Duration {
        self.rng.latency(0.4, 0.4, 0.1, 3.0)
    }

    /// Fails `op` when a database call failed; returns `failed`.
    fn fail_if(&mut self, op: &mut Op, failed: bool) -> bool {
        if failed {
            self.busy(op, 0.2);
            op.raise("DatabaseError", "a database call failed");
        }
        failed
    }
}

fn messaging(op: &mut Op, operation: &'static str, order: &str, partition: &str) {
    op.attr("messaging.system", "kafka");
    op.attr("messaging.destination.name", "orders");
    op.attr("messaging.operation.type", operation);
    op.attr("messaging.operation.name", operation);
    op.attr("messaging.kafka.message.key", order.to_owned());
    op.attr("messaging.destination.partition.id", partition.to_owned());
    op.attr("server.address", "kafka");
    op.attr("server.port", 9092_i64);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn attr<'a>(op: &'a Op, key: &str) -> Option<&'a opentelemetry::Value> {
        op.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    /// The edges the service-graph rules of DESIGN.md would draw.
    fn edges(op: &Op, out: &mut BTreeSet<(String, String, &'static str)>) {
        let peer = attr(op, "peer.service").map(|v| v.as_str().into_owned());
        match op.kind {
            SpanKind::Client if attr(op, "db.system").is_some() => {
                out.insert((op.service.name().into(), peer.unwrap(), "database"));
            }
            SpanKind::Client if op.children.is_empty() => {
                out.insert((op.service.name().into(), peer.unwrap(), "virtual_node"));
            }
            SpanKind::Client | SpanKind::Producer => {
                let kind = match op.kind {
                    SpanKind::Producer => "messaging_system",
                    _ => "",
                };
                for child in &op.children {
                    out.insert((op.service.name().into(), child.service.name().into(), kind));
                }
            }
            _ => {}
        }
        for child in &op.children {
            edges(child, out);
        }
    }

    fn plan(count: usize) -> Vec<Op> {
        let mut planner = Planner::new(7);
        (0..count).map(|_| planner.trace()).collect()
    }

    #[test]
    fn traces_draw_the_shop_topology() {
        let mut seen = BTreeSet::new();
        for trace in plan(2000) {
            edges(&trace, &mut seen);
        }
        let want = [
            ("frontend", "cart", ""),
            ("frontend", "catalog", ""),
            ("frontend", "checkout", ""),
            ("frontend", "recommendation", ""),
            ("frontend", "currency", ""),
            ("recommendation", "catalog", ""),
            ("checkout", "cart", ""),
            ("checkout", "catalog", ""),
            ("checkout", "currency", ""),
            ("checkout", "payment", ""),
            ("checkout", "shipping", ""),
            ("checkout", "postgres", "database"),
            ("checkout", "email", "messaging_system"),
            ("checkout", "fulfillment", "messaging_system"),
            ("cart", "redis", "database"),
            ("catalog", "postgres", "database"),
            ("fulfillment", "postgres", "database"),
            ("shipping", "carrier-api", "virtual_node"),
        ];
        let want: BTreeSet<_> = want
            .iter()
            .map(|(a, b, k)| (a.to_string(), b.to_string(), *k))
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn a_few_percent_of_requests_fail_and_errors_show_on_both_sides() {
        let traces = plan(5000);
        let failed = traces.iter().filter(|t| t.failed()).count();
        let rate = failed as f64 / traces.len() as f64;
        assert!((0.005..0.08).contains(&rate), "root error rate {rate}");

        fn check(op: &Op, client_and_server_failures: &mut usize) {
            if op.kind == SpanKind::Client
                && let Some(server) = op.children.first()
            {
                assert_eq!(op.failed(), server.failed(), "{}", op.name);
                if server.failed() {
                    *client_and_server_failures += 1;
                    assert!(server.failure.as_ref().unwrap().exception.is_some());
                }
            }
            op.children
                .iter()
                .for_each(|c| check(c, client_and_server_failures));
        }
        let mut both = 0;
        traces.iter().for_each(|t| check(t, &mut both));
        assert!(both > 20, "only {both} calls failed on both sides");
    }

    #[test]
    fn timing_nests_and_latencies_are_realistic() {
        fn check(op: &Op) {
            assert!(op.start <= op.end, "{}", op.name);
            for child in &op.children {
                if op.kind == SpanKind::Producer {
                    assert!(child.start >= op.end, "consumers start after the send");
                } else {
                    assert!(
                        op.start <= child.start && child.end <= op.end,
                        "{}",
                        child.name
                    );
                }
                check(child);
            }
        }
        let traces = plan(3000);
        traces.iter().for_each(check);
        let mut root_ms: Vec<f64> = traces
            .iter()
            .filter(|t| t.name != "POST /checkout")
            .map(|t| t.end.as_secs_f64() * 1000.0)
            .collect();
        root_ms.sort_by(f64::total_cmp);
        let median = root_ms[root_ms.len() / 2];
        let p99 = root_ms[root_ms.len() * 99 / 100];
        assert!((15.0..120.0).contains(&median), "median {median}ms");
        assert!((median..1000.0).contains(&p99), "p99 {p99}ms");
    }
}
