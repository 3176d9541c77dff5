"""Traffic through four services, instrumented with the real OpenTelemetry
Python SDK, for the CloudWatch exporter test.

frontend  SERVER "GET /shop"            (root: an edge from `user`)
  └─ CLIENT "GET /checkout"  → checkout SERVER "POST /checkout"   every 4th fails
        ├─ CLIENT "SELECT"   postgresql, db.namespace=orders        (database edge)
        └─ CLIENT "POST"     → payments SERVER "POST /charge"     every 3rd fails

Durations are set explicitly (start and end times in the recent past), so
latencies vary from request to request without the test sleeping.
Exits non-zero unless every export succeeded; prints the span count.
"""

import argparse
import sys
import time

from opentelemetry import context as otel_context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from send_spans import CheckedExporter, make_exporter

PROPAGATOR = TraceContextTextMapPropagator()
MS = 1_000_000


def service(name, endpoint):
    exporter = CheckedExporter(make_exporter("grpc", endpoint))
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=128))
    return provider, exporter, provider.get_tracer("tracemap.cloudwatch-test")


def remote(span):
    """The context a downstream service extracts from the request headers."""
    carrier = {}
    PROPAGATOR.inject(carrier, context=set_span_in_context(span))
    return PROPAGATOR.extract(carrier, context=otel_context.Context())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()

    services = {n: service(n, args.endpoint) for n in ("frontend", "checkout", "payments")}
    tracer = {n: s[2] for n, s in services.items()}
    spans = 0
    for i in range(args.requests):
        # Ends a little in the past, so every span is complete when sent.
        t = time.time_ns() - 3_000 * MS
        checkout_ms = 20 + (i * 7) % 60
        pay_ms = 5 + (i * 13) % 30
        db_ms = 1 + (i * 3) % 9
        total = checkout_ms + 10
        root = tracer["frontend"].start_span("GET /shop", kind=SpanKind.SERVER, start_time=t)
        ctx = set_span_in_context(root)
        call = tracer["frontend"].start_span(
            "GET /checkout", context=ctx, kind=SpanKind.CLIENT, start_time=t + 2 * MS
        )
        serve = tracer["checkout"].start_span(
            "POST /checkout", context=remote(call), kind=SpanKind.SERVER, start_time=t + 3 * MS
        )
        sctx = set_span_in_context(serve)
        db = tracer["checkout"].start_span(
            "SELECT",
            context=sctx,
            kind=SpanKind.CLIENT,
            start_time=t + 4 * MS,
            attributes={"db.system": "postgresql", "db.namespace": "orders"},
        )
        db.end(end_time=t + 4 * MS + db_ms * MS)
        pay_call = tracer["checkout"].start_span(
            "POST", context=sctx, kind=SpanKind.CLIENT, start_time=t + 5 * MS
        )
        charge = tracer["payments"].start_span(
            "POST /charge", context=remote(pay_call), kind=SpanKind.SERVER, start_time=t + 6 * MS
        )
        if i % 3 == 0:
            charge.set_status(Status(StatusCode.ERROR, "declined"))
        charge.end(end_time=t + 6 * MS + pay_ms * MS)
        pay_call.end(end_time=t + 7 * MS + pay_ms * MS)
        if i % 4 == 0:
            serve.set_status(Status(StatusCode.ERROR, "out of stock"))
        serve.end(end_time=t + 3 * MS + (checkout_ms - 2) * MS)
        call.end(end_time=t + 2 * MS + checkout_ms * MS)
        root.end(end_time=t + total * MS)
        spans += 6

    exported = failures = 0
    for provider, exporter, _ in services.values():
        provider.force_flush()
        provider.shutdown()
        exported += exporter.exported
        failures += exporter.failures
    if failures or exported != spans:
        sys.exit(f"expected {spans} spans exported without failure, got {exported}, {failures} failures")
    print(spans)


if __name__ == "__main__":
    main()
