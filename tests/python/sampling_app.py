"""Traffic for the tail-sampling test, from the real OpenTelemetry Python
SDK: four services, spans timed now, each service exporting on its own
(so a trace's spans reach the collector in several requests).

Per iteration i in 0..N:
  frontend  SERVER "GET /shop" (root)                           user -> frontend
  frontend  CLIENT -> checkout SERVER (ERROR, 500 when i%10==3)  frontend -> checkout
  checkout  CLIENT "SELECT orders" postgresql/orders             checkout -> orders
  frontend  CLIENT -> inventory SERVER (800 ms when i%10==7, else 20 ms)
  frontend  CLIENT -> recommendations SERVER, only when i%10==1  (an edge only healthy traces have)

Prints one JSON line: {"traces": [{"trace_id", "kind", "span_ids"}]},
kind being error, slow or healthy. Exits non-zero unless every export succeeded.
"""

import argparse
import json
import sys
import time

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from send_spans import CheckedExporter, make_exporter

MS = 1_000_000
PROPAGATOR = TraceContextTextMapPropagator()


class Service:
    def __init__(self, name, endpoint):
        self.exporter = CheckedExporter(make_exporter("grpc", endpoint))
        self.provider = TracerProvider(resource=Resource.create({"service.name": name}))
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tracemap.sampling-test")

    def span(self, spans, name, kind, start, duration, parent=None, attributes=None, error=False):
        ctx = PROPAGATOR.extract(parent) if parent is not None else otel_context.Context()
        span = self.tracer.start_span(name, context=ctx, kind=kind, start_time=start, attributes=attributes)
        if error:
            span.set_status(Status(StatusCode.ERROR, "out of stock"))
        span.end(end_time=start + duration)
        spans.append(format(span.get_span_context().span_id, "016x"))
        carrier = {}
        PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        return carrier

    def close(self):
        self.provider.force_flush()
        self.provider.shutdown()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()

    names = ["frontend", "checkout", "inventory", "recommendations"]
    services = {name: Service(name, args.endpoint) for name in names}
    frontend, checkout = services["frontend"], services["checkout"]
    inventory, recommendations = services["inventory"], services["recommendations"]
    traces = []
    for i in range(args.iterations):
        error, slow = i % 10 == 3, i % 10 == 7
        spans = []
        t0 = time.time_ns()
        stock = (800 if slow else 20) * MS
        root = frontend.span(spans, "GET /shop", SpanKind.SERVER, t0, stock + 60 * MS,
                             attributes={"http.request.method": "GET", "url.path": "/shop"})
        call = frontend.span(spans, "POST /checkout", SpanKind.CLIENT, t0 + 1 * MS, 20 * MS, root,
                             {"http.request.method": "POST", "server.address": "checkout"})
        served = checkout.span(spans, "POST /checkout", SpanKind.SERVER, t0 + 2 * MS, 18 * MS, call,
                               {"http.request.method": "POST",
                                "http.response.status_code": 500 if error else 200}, error=error)
        checkout.span(spans, "SELECT orders", SpanKind.CLIENT, t0 + 3 * MS, 3 * MS, served,
                      {"db.system": "postgresql", "db.namespace": "orders"})
        call = frontend.span(spans, "GET /stock", SpanKind.CLIENT, t0 + 25 * MS, stock + 2 * MS, root,
                             {"http.request.method": "GET", "server.address": "inventory"})
        inventory.span(spans, "GET /stock", SpanKind.SERVER, t0 + 26 * MS, stock, call)
        if i % 10 == 1:
            call = frontend.span(spans, "GET /recommended", SpanKind.CLIENT, t0 + 30 * MS, 5 * MS, root,
                                 {"http.request.method": "GET", "server.address": "recommendations"})
            recommendations.span(spans, "GET /recommended", SpanKind.SERVER, t0 + 31 * MS, 3 * MS, call)
        traces.append({
            "trace_id": root["traceparent"].split("-")[1],
            "kind": "error" if error else "slow" if slow else "healthy",
            "span_ids": spans,
        })
    for service in services.values():
        service.close()
    failed = [s for s in services.values() if s.exporter.failures]
    print(json.dumps({"traces": traces}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
