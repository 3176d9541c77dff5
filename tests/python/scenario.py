"""A small multi-service system instrumented with the real OpenTelemetry
Python SDK, with fixed span timestamps so the service graph it produces is
known exactly.

Per iteration i in 0..N:
  frontend  SERVER "GET /checkout" (root, 100 ms)              -> user -> frontend
  frontend  CLIENT "POST /checkout" (10+i ms)                  -> frontend -> checkout
  checkout  SERVER "POST /checkout" (5+i ms; ERROR when i%5==0)
  checkout  CLIENT "INSERT orders" db.system=postgresql, db.namespace=orders (3 ms)
                                                               -> checkout -> orders (database)
  checkout  PRODUCER "orders publish" -> email CONSUMER "orders process" (2 ms)
                                                               -> checkout -> email (messaging_system)
  frontend  CLIENT "GET /rates" server.address=rates.example (7 ms), never answered
                                                               -> frontend -> rates.example (virtual_node, after the TTL)
"""

import argparse
import sys

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from send_spans import CheckedExporter, make_exporter

BASE = 1_800_000_000_000_000_000  # fixed start, ns
MS = 1_000_000
PROPAGATOR = TraceContextTextMapPropagator()


class Service:
    def __init__(self, name, protocol, endpoint):
        self.exporter = CheckedExporter(make_exporter(protocol, endpoint))
        self.provider = TracerProvider(resource=Resource.create({"service.name": name}))
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tracemap.scenario")

    def span(self, name, kind, start, duration, parent_carrier=None, attributes=None, error=False):
        ctx = PROPAGATOR.extract(parent_carrier) if parent_carrier is not None else otel_context.Context()
        span = self.tracer.start_span(name, context=ctx, kind=kind, start_time=start, attributes=attributes)
        if error:
            span.set_status(Status(StatusCode.ERROR, "card declined"))
        carrier = {}
        PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        return span, start + duration, carrier

    def close(self):
        self.provider.force_flush()
        self.provider.shutdown()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()

    frontend = Service("frontend", args.protocol, args.endpoint)
    checkout = Service("checkout", args.protocol, args.endpoint)
    email = Service("email", args.protocol, args.endpoint)

    for i in range(args.iterations):
        t0 = BASE + i * 1_000 * MS
        root, root_end, root_ctx = frontend.span("GET /checkout", SpanKind.SERVER, t0, 100 * MS)
        call, call_end, call_ctx = frontend.span(
            "POST /checkout", SpanKind.CLIENT, t0 + 1 * MS, (10 + i) * MS, root_ctx,
            {"http.request.method": "POST", "server.address": "checkout"},
        )
        served, served_end, served_ctx = checkout.span(
            "POST /checkout", SpanKind.SERVER, t0 + 2 * MS, (5 + i) * MS, call_ctx,
            {"http.request.method": "POST", "http.response.status_code": 500 if i % 5 == 0 else 200},
            error=(i % 5 == 0),
        )
        db, db_end, _ = checkout.span(
            "INSERT orders", SpanKind.CLIENT, t0 + 3 * MS, 3 * MS, served_ctx,
            {"db.system": "postgresql", "db.namespace": "orders"},
        )
        db.end(end_time=db_end)
        produce, produce_end, produce_ctx = checkout.span(
            "orders publish", SpanKind.PRODUCER, t0 + 4 * MS, 1 * MS, served_ctx,
            {"messaging.system": "kafka", "messaging.destination.name": "orders"},
        )
        produce.end(end_time=produce_end)
        consume, consume_end, _ = email.span(
            "orders process", SpanKind.CONSUMER, t0 + 6 * MS, 2 * MS, produce_ctx,
            {"messaging.system": "kafka"},
        )
        consume.end(end_time=consume_end)
        served.end(end_time=served_end)
        call.end(end_time=call_end)
        rates, rates_end, _ = frontend.span(
            "GET /rates", SpanKind.CLIENT, t0 + 50 * MS, 7 * MS, root_ctx,
            {"http.request.method": "GET", "server.address": "rates.example"},
        )
        rates.end(end_time=rates_end)
        root.end(end_time=root_end)

    services = (frontend, checkout, email)
    for service in services:
        service.close()
    failures = sum(s.exporter.failures for s in services)
    exported = sum(s.exporter.exported for s in services)
    print(f"exported={exported} failures={failures}")
    if failures or exported != args.iterations * 7:
        sys.exit(f"expected {args.iterations * 7} spans exported without failure")


if __name__ == "__main__":
    main()
