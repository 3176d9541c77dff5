"""Sends spans to tracemap with the real OpenTelemetry Python SDK.

Each trace is a SERVER span with CLIENT children, as an instrumented web
service would emit. Exits non-zero unless every export succeeded, so the
Rust test knows exactly how many spans the collector acknowledged.
"""

import argparse
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode


class CheckedExporter(SpanExporter):
    """Delegates to the OTLP exporter and remembers every result."""

    def __init__(self, inner):
        self.inner = inner
        self.exported = 0
        self.failures = 0

    def export(self, spans):
        result = self.inner.export(spans)
        if result == SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failures += 1
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


def make_exporter(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )

        return OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=10)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter,
    )

    return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=10)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--protocol", choices=["grpc", "http"], required=True)
    parser.add_argument("--traces", type=int, default=10)
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--service", default="py-frontend")
    args = parser.parse_args()

    exporter = CheckedExporter(make_exporter(args.protocol, args.endpoint))
    provider = TracerProvider(resource=Resource.create({"service.name": args.service}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64))
    tracer = provider.get_tracer("tracemap.tests")

    for i in range(args.traces):
        with tracer.start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as server:
            server.set_attribute("http.request.method", "GET")
            server.set_attribute("http.response.status_code", 200)
            for c in range(args.children):
                with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT) as client:
                    client.set_attribute("db.system", "postgresql")
                    if (i + c) % 7 == 0:
                        client.set_status(Status(StatusCode.ERROR, "timeout"))

    provider.force_flush()
    provider.shutdown()
    expected = args.traces * (1 + args.children)
    print(f"exported={exporter.exported} failures={exporter.failures}")
    if exporter.failures or exporter.exported != expected:
        sys.exit(f"expected {expected} spans exported without failure")


if __name__ == "__main__":
    main()
