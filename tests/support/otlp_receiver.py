"""An OTLP/HTTP trace receiver on loopback, for tests that check what really went over the wire.

Built on ``http.server`` and ``opentelemetry-proto`` (it decodes ``ExportTraceServiceRequest``
bodies, gzip or not), so an application's real exporter talks to it exactly as to a collector::

    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        ...                                   # run code that exports spans
        spans = receiver.wait_for_spans(lambda s: any(x.name == "root" for x in s))

``stall=True`` makes it a receiver that accepts requests and never answers (until closed), for
testing slow collectors; ``decode=False`` only counts requests and bytes, as a fast collector
would cost. ``python -m tests.support.otlp_receiver [--no-decode]`` runs one in the foreground
and prints its endpoint (for benchmarks that want the receiver out of their process).
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived, with ids as hex strings and attributes as Python values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    resource: dict[str, Any]
    scope: str
    start_ns: int
    end_ns: int


@dataclass
class OTLPReceiver:
    """Receives OTLP/HTTP trace exports on ``127.0.0.1`` (an ephemeral port unless given)."""

    port: int = 0
    stall: bool = False
    decode: bool = True
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    bytes_received: int = 0
    raw_bodies: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="otlp-receiver")

    @property
    def endpoint(self) -> str:
        """The base URL, for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def traces_endpoint(self) -> str:
        """The traces URL, for ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or an exporter argument."""
        return f"{self.endpoint}/v1/traces"

    def start(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving; stalled requests are released (answered 503) first."""
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def wait_for_spans(self, done: Callable[[list[ReceivedSpan]], bool] | int = 1,
                       timeout: float = 10.0) -> list[ReceivedSpan]:
        """Wait until ``done(spans)`` holds (or, given a number, that many spans arrived);
        return a copy of the spans. Raises ``TimeoutError`` with what did arrive."""
        check = done if callable(done) else (lambda spans: len(spans) >= done)
        deadline = time.monotonic() + timeout
        with self._lock:
            while not check(self.spans):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"after {timeout} s the receiver has {len(self.spans)} "
                                       f"spans: {sorted({s.name for s in self.spans})}")
                self._lock.wait(left)
            return list(self.spans)

    def _received(self, body: bytes) -> None:
        if not self.decode:
            with self._lock:
                self.requests += 1
                self.bytes_received += len(body)
                self._lock.notify_all()
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = [span for rs in request.resource_spans for span in _spans_of(rs)]
        with self._lock:
            self.requests += 1
            self.bytes_received += len(body)
            self.raw_bodies.append(body)
            self.spans.extend(spans)
            self._lock.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.stall:
                    receiver._release.wait()
                    self._answer(503, b"")
                    return
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path.rstrip("/") != "/v1/traces":
                    self._answer(404, b"")
                    return
                receiver._received(body)
                self._answer(200, ExportTraceServiceResponse().SerializeToString())

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        return Handler


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _spans_of(resource_spans: Any) -> list[ReceivedSpan]:
    resource = _attributes(resource_spans.resource.attributes)
    out = []
    for scope_spans in resource_spans.scope_spans:
        for s in scope_spans.spans:
            out.append(ReceivedSpan(
                name=s.name, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                parent_span_id=s.parent_span_id.hex() or None,
                attributes=_attributes(s.attributes),
                events=[(e.name, _attributes(e.attributes)) for e in s.events],
                status_code=s.status.code, status_message=s.status.message,
                resource=resource, scope=scope_spans.scope.name,
                start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano))
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-decode", action="store_true", help="count requests only")
    args = parser.parse_args()
    with OTLPReceiver(port=args.port, decode=not args.no_decode) as running:
        print(running.endpoint, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
