"""Traffic for the scale-out test, from the real OpenTelemetry Python SDK.

Every call's two halves leave through different agents, as they do when
the client and server pods run on different nodes: each service has one
TracerProvider for its CLIENT/PRODUCER side, exporting to --client-endpoint
(agent 1), and one for its SERVER/CONSUMER side, exporting to
--server-endpoint (agent 2). Every provider also exports to --standalone,
so one collector sees the same spans whole. Context crosses providers by
hand, as a traceparent header would carry it, and ids and timestamps are
fixed, so the graph is known exactly.

Services are named p<phase>-<service>, so each phase's edges can be told
apart in a graph that holds several phases.

Per iteration i:
  frontend SERVER "GET /checkout" (root)            -> user -> frontend (virtual_node)
  frontend CLIENT "POST /checkout" -> checkout SERVER (ERROR when i%4==0)
  checkout CLIENT "POST /pay" (ERROR when i%5==0) -> payment SERVER
  checkout CLIENT "INSERT orders" db.namespace=p<phase>-orders (database)
  checkout PRODUCER "orders publish" -> email CONSUMER (messaging_system)
"""

import argparse
import sys

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from send_spans import CheckedExporter, make_exporter

BASE = 1_800_000_000_000_000_000  # fixed start, ns
MS = 1_000_000
SPANS_PER_ITERATION = 9


class FixedIds(IdGenerator):
    """Hands out the ids the script chose for the next span."""

    def __init__(self):
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self):
        return self.trace_id

    def generate_span_id(self):
        return self.span_id


class Side:
    """One service's client or server side: a provider, two exporters."""

    def __init__(self, service, endpoint, standalone, ids):
        self.exporters = [
            CheckedExporter(make_exporter("grpc", endpoint)),
            CheckedExporter(make_exporter("grpc", standalone)),
        ]
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service}), id_generator=ids
        )
        for exporter in self.exporters:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("tracemap.scale_out")

    def close(self):
        self.provider.force_flush()
        self.provider.shutdown()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--client-endpoint", required=True)
    parser.add_argument("--server-endpoint", required=True)
    parser.add_argument("--standalone", required=True)
    parser.add_argument("--phase", type=int, required=True)
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()

    ids = FixedIds()
    sides = {}

    def side(service, client):
        key = (service, client)
        if key not in sides:
            endpoint = args.client_endpoint if client else args.server_endpoint
            sides[key] = Side(f"p{args.phase}-{service}", endpoint, args.standalone, ids)
        return sides[key]

    def emit(service, client, name, kind, trace_id, span_id, parent, start, duration,
             attributes=None, error=False):
        ids.trace_id, ids.span_id = trace_id, span_id
        if parent is None:
            context = Context()
        else:
            remote = SpanContext(trace_id, parent, is_remote=True,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED))
            context = trace.set_span_in_context(NonRecordingSpan(remote))
        span = side(service, client).tracer.start_span(
            name, context=context, kind=kind, start_time=start, attributes=attributes)
        if error:
            span.set_status(Status(StatusCode.ERROR, "failed"))
        span.end(end_time=start + duration)

    for i in range(args.iterations):
        trace_id = (args.phase << 96) | (0xABCDEF << 64) | (i + 1)
        sid = lambda n: (args.phase << 40) | ((i + 1) << 8) | n  # noqa: E731
        t0 = BASE + (args.phase * 10_000 + i) * 1_000 * MS
        server = dict(client=False)
        client = dict(client=True)
        emit("frontend", name="GET /checkout", kind=SpanKind.SERVER, trace_id=trace_id,
             span_id=sid(1), parent=None, start=t0, duration=100 * MS, **server)
        emit("frontend", name="POST /checkout", kind=SpanKind.CLIENT, trace_id=trace_id,
             span_id=sid(2), parent=sid(1), start=t0 + MS, duration=(20 + i) * MS,
             attributes={"server.address": "checkout"}, **client)
        emit("checkout", name="POST /checkout", kind=SpanKind.SERVER, trace_id=trace_id,
             span_id=sid(3), parent=sid(2), start=t0 + 2 * MS, duration=(15 + i) * MS,
             error=(i % 4 == 0), **server)
        emit("checkout", name="POST /pay", kind=SpanKind.CLIENT, trace_id=trace_id,
             span_id=sid(4), parent=sid(3), start=t0 + 3 * MS, duration=8 * MS,
             attributes={"server.address": "payment"}, error=(i % 5 == 0), **client)
        emit("payment", name="POST /pay", kind=SpanKind.SERVER, trace_id=trace_id,
             span_id=sid(5), parent=sid(4), start=t0 + 4 * MS, duration=5 * MS, **server)
        emit("checkout", name="INSERT orders", kind=SpanKind.CLIENT, trace_id=trace_id,
             span_id=sid(6), parent=sid(3), start=t0 + 12 * MS, duration=2 * MS,
             attributes={"db.system": "postgresql", "db.namespace": f"p{args.phase}-orders"},
             **client)
        emit("checkout", name="orders publish", kind=SpanKind.PRODUCER, trace_id=trace_id,
             span_id=sid(7), parent=sid(3), start=t0 + 14 * MS, duration=MS,
             attributes={"messaging.system": "kafka", "messaging.destination.name": "orders"},
             **client)
        emit("email", name="orders process", kind=SpanKind.CONSUMER, trace_id=trace_id,
             span_id=sid(8), parent=sid(7), start=t0 + 16 * MS, duration=3 * MS, **server)
        emit("payment", name="fraud check", kind=SpanKind.INTERNAL, trace_id=trace_id,
             span_id=sid(9), parent=sid(5), start=t0 + 5 * MS, duration=MS, **server)

    for s in sides.values():
        s.close()
    exporters = [e for s in sides.values() for e in s.exporters]
    failures = sum(e.failures for e in exporters)
    exported = sum(e.exported for e in exporters)
    expected = 2 * args.iterations * SPANS_PER_ITERATION
    print(f"exported={exported} failures={failures}")
    if failures or exported != expected:
        sys.exit(f"expected {expected} span exports without failure")


if __name__ == "__main__":
    main()
