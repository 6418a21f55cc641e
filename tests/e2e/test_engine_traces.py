"""vLLM's own start-up spans, from this process and from its EngineCore process, continue the
trace of the initialization under llm-init's engine-step span."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.e2e.support import REPO_ROOT, replica_pythonpath
from tests.e2e.test_engine_step import FAST_ENV

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]


class Receiver:
    """OTLP/HTTP trace receiver on loopback: keeps every span with its process's resource."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    resource = {a.key: a.value.string_value
                                for a in resource_spans.resource.attributes}
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            receiver.spans.append({
                                "name": span.name, "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(), "resource": resource})
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"


def test_vllm_spans_are_children_of_the_engine_step_span(tiny_model: pathlib.Path):
    """Spans of EngineCore (another process, which reads TRACEPARENT) share the
    initialization's trace and hang under the engine step's span."""
    pytest.importorskip("vllm")
    receiver = Receiver()
    env = {**os.environ, **FAST_ENV, "PYTHONPATH": replica_pythonpath(),
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url,
           "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
           "OTEL_BSP_SCHEDULE_DELAY": "200"}
    try:
        subprocess.run([sys.executable, "-m", "tests.e2e.trace_engine", str(tiny_model),
                        receiver.url], env=env, cwd=REPO_ROOT, check=True, timeout=300,
                       capture_output=True)
    finally:
        receiver.server.shutdown()
    spans = receiver.spans
    (step,) = [s for s in spans if s["name"] == "llm_init.step.engine"]
    by_id = {s["span_id"]: s for s in spans}

    def ancestors(span: dict[str, Any]) -> list[str]:
        names = []
        while span["parent"] in by_id:
            span = by_id[span["parent"]]
            names.append(span["name"])
        return names

    core = [s for s in spans if s["resource"].get("vllm.process_kind") == "engine_core"]
    names = {s["name"] for s in core}
    print(sorted(names))
    assert {"Load weights", "Initialize model"} <= names
    assert {s["trace_id"] for s in core} == {step["trace_id"]}
    for span in core:
        assert "llm_init.step.engine" in ancestors(span), span["name"]
        assert "llm_init.initialize" in ancestors(span)
