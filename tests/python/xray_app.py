"""One request through two services, instrumented with the real
OpenTelemetry Python SDK, as the X-Ray exporter test reads it back.

checkout-api  SERVER "GET /orders/{id}"  500, ERROR, customer.tier/order.id, enduser.id
  ├─ CLIENT "SELECT orders"   postgresql, db.namespace=orders, SQL text       (current semconv)
  ├─ CLIENT "GET"             inventory, 404                                  (old semconv keys)
  └─ CLIENT "POST"            payments, 500, ERROR
       └─ payments SERVER "POST /charge"  500, ERROR, exception event

Spans leave through a BatchSpanProcessor, as apps usually send them:
checkout-api's four go in one export, so its CLIENT spans come back from
X-Ray embedded in its segment.

Prints one JSON line: {"trace_id": hex, "spans": {label: span id hex}}.
Exits non-zero unless every export succeeded.
"""

import argparse
import json
import sys

from opentelemetry import context as otel_context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from send_spans import CheckedExporter, make_exporter

PROPAGATOR = TraceContextTextMapPropagator()


def service(name, protocol, endpoint):
    exporter = CheckedExporter(make_exporter(protocol, endpoint))
    provider = TracerProvider(
        resource=Resource.create({"service.name": name, "service.version": "1.4.2"})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, exporter, provider.get_tracer("tracemap.xray-test")


def hex_id(span):
    return format(span.get_span_context().span_id, "016x")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    args = parser.parse_args()

    checkout, checkout_exp, api = service("checkout-api", args.protocol, args.endpoint)
    payments, payments_exp, pay = service("payments", args.protocol, args.endpoint)
    ids = {}

    with api.start_as_current_span(
        "GET /orders/{id}",
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "url.full": "http://shop.example.com/orders/42?verbose=1",
            "url.path": "/orders/42",
            "http.route": "/orders/{id}",
            "user_agent.original": "xray-test/1.0",
            "client.address": "203.0.113.7",
            "customer.tier": "gold",
            "order.id": 42,
            "enduser.id": "alice",
        },
    ) as root:
        ids["root"] = hex_id(root)
        trace_id = format(root.get_span_context().trace_id, "032x")

        with api.start_as_current_span(
            "SELECT orders",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "postgresql",
                "db.namespace": "orders",
                "db.query.text": "SELECT * FROM orders WHERE id = $1",
                "db.user": "shop",
                "server.address": "db.internal",
                "server.port": 5432,
            },
        ) as db:
            ids["db"] = hex_id(db)

        with api.start_as_current_span(
            "GET",
            kind=SpanKind.CLIENT,
            attributes={
                "http.method": "GET",
                "http.url": "http://inventory:8080/stock/42",
                "http.status_code": 404,
                "peer.service": "inventory",
            },
        ) as missing:
            ids["inventory"] = hex_id(missing)

        with api.start_as_current_span(
            "POST",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "POST",
                "url.full": "http://payments:8080/charge",
                "server.address": "payments",
                "peer.service": "payments",
            },
        ) as call:
            ids["payments_call"] = hex_id(call)
            carrier = {}
            PROPAGATOR.inject(carrier)
            ctx = PROPAGATOR.extract(carrier, context=otel_context.Context())
            with pay.start_as_current_span(
                "POST /charge",
                context=ctx,
                kind=SpanKind.SERVER,
                attributes={
                    "http.request.method": "POST",
                    "url.path": "/charge",
                    "http.route": "/charge",
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as charge:
                ids["charge"] = hex_id(charge)
                try:
                    raise RuntimeError("card processor unavailable")
                except RuntimeError as err:
                    charge.record_exception(err)
                charge.set_attribute("http.response.status_code", 500)
                charge.set_status(Status(StatusCode.ERROR, "card processor unavailable"))
            call.set_attribute("http.response.status_code", 500)
            call.set_status(Status(StatusCode.ERROR))

        root.set_attribute("http.response.status_code", 500)
        root.set_status(Status(StatusCode.ERROR))

    for provider in (checkout, payments):
        provider.force_flush()
        provider.shutdown()
    exporters = (checkout_exp, payments_exp)
    failures = sum(e.failures for e in exporters)
    exported = sum(e.exported for e in exporters)
    if failures or exported != len(ids):
        sys.exit(f"expected {len(ids)} spans exported without failure, got {exported}, {failures} failures")
    print(json.dumps({"trace_id": trace_id, "spans": ids}))


if __name__ == "__main__":
    main()
