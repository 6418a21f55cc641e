"""What one hook invocation costs, at each level of telemetry.

Runs initializations with 16 callbacks that implement all eight hooks as no-ops (128 hook
calls) and with none, alternately; the difference divided by 128 is the cost of one hook call
through the runtime. Levels, each adding to the one before:

1. bare call: calling the 128 bound hook methods in a loop;
2. runtime, telemetry off: events in memory, no SDK, no metrics, logging not configured;
3. + events in SQLite (a file in a temporary directory, WAL, group commit);
4. + SDK spans: ``configure_tracing``'s provider (batch processor, OTLP/HTTP exporter), sending to
   a receiver in another process on loopback that only counts what it gets, as a collector
   elsewhere would cost this process (flushed at the end of each initialization, as the
   runtime does);
5. + metrics: ``MetricsCallback`` on a ``prometheus_client`` registry;
6. + logs: ``configure_logging`` JSON lines at INFO, written to /dev/null.

Reference rows, without llm-init code, split what one span costs: the SDK creating and ending it,
the exporter encoding it, both together, and one OTLP/HTTP request (once per initialization, not
per hook).

Usage: ``python benchmarks/hook_overhead.py [--runs 41] [--callbacks 16]``. Prints a table of
medians, in wall-clock time and in CPU time of the whole process (every thread: the event
writer, the span batch processor), which is steadier on a shared machine. Targets, checked
below the table in CPU time: a fully observed hook call (everything on) costs at most twice the
SDK's own span (create, end, encode) measured in the same run, and the observation of a whole
initialization (``--calls`` hook and step calls) at most 1 % of the tiny model's start
(``--start-s``, the initialization time the README reports for ``llm-init demo``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from prometheus_client import CollectorRegistry  # noqa: E402

from llm_init import (  # noqa: E402
    HOOK_NAMES,
    DefaultSteps,
    InMemoryEventStore,
    LLMConfig,
    NodeInitializationContext,
    SQLiteEventStore,
    initialize_node,
)
from llm_init.telemetry.backends import PrometheusBackend  # noqa: E402
from llm_init.telemetry.logs import configure_logging, unconfigure_logging  # noqa: E402
from llm_init.telemetry.metrics import MetricsCallback  # noqa: E402
from llm_init.telemetry.tracing import configure_tracing, shutdown  # noqa: E402


class SettingStep:
    def __init__(self, field: str, value: Any) -> None:
        self.field, self.value = field, value

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        setattr(ctx, self.field, self.value)


def steps() -> DefaultSteps:
    return DefaultSteps(download=SettingStep("download_result", {"path": "/models/tiny"}),
                        placement_group=SettingStep("placement_group", {"bundles": [{"CPU": 1}]}),
                        engine=SettingStep("engine", "engine"))


def no_op_callback_classes(count: int) -> list[type]:
    def no_op(self: Any, ctx: Any) -> None:
        return None

    return [type(f"NoOp{i}", (), dict.fromkeys(HOOK_NAMES, no_op)) for i in range(count)]


class Level:
    """One row of the table: how to run an initialization at this level."""

    def __init__(self, name: str, *, store: Callable[[], Any], provider: Any = None,
                 metrics: bool = False) -> None:
        self.name, self.store, self.provider, self.metrics = name, store, provider, metrics

    def run(self, config: LLMConfig) -> tuple[float, float]:
        """Wall and CPU seconds (all threads of the process) of one initialization."""
        observers = ([MetricsCallback(PrometheusBackend(REGISTRY, port=None))]
                     if self.metrics else [])
        wall, cpu = time.perf_counter(), time.process_time()
        asyncio.run(initialize_node(config, event_store=self.store(), steps=steps(),
                                    observers=observers, tracer_provider=self.provider))
        return time.perf_counter() - wall, time.process_time() - cpu


REGISTRY = CollectorRegistry()


def per_hook(level: Level, classes: list[type], runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds per hook call: (with hooks - without) / hook calls."""
    hooks = len(classes) * len(HOOK_NAMES)
    with_hooks = LLMConfig(model_id="bench", callback_class=classes,
                           callback_kwargs=[{}] * len(classes), enable_metrics=False)
    without = LLMConfig(model_id="bench", enable_metrics=False)
    for _ in range(3):  # warm up: imports, first-use set-up, caches
        level.run(with_hooks), level.run(without)
    walls, cpus = [], []
    for _ in range(runs):
        (wall_with, cpu_with), (wall_without, cpu_without) = (level.run(with_hooks),
                                                              level.run(without))
        walls.append((wall_with - wall_without) / hooks)
        cpus.append((cpu_with - cpu_without) / hooks)
    return statistics.median(walls), statistics.median(cpus)


def bare_call(classes: list[type], runs: int) -> tuple[float, float]:
    ctx = NodeInitializationContext.for_config("bench", LLMConfig(model_id="bench"))
    bound = [getattr(cls(), hook) for cls in classes for hook in HOOK_NAMES]
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(100):
            for fn in bound:
                fn(ctx)
        walls.append((time.perf_counter() - wall) / (100 * len(bound)))
        cpus.append((time.process_time() - cpu) / (100 * len(bound)))
    return statistics.median(walls), statistics.median(cpus)


class _Keep(SpanExporter):
    """Keeps the spans it is given, so that their encoding can be timed alone."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def sdk_span_parts(endpoint: str, runs: int) -> list[tuple[str, tuple[float, float]]]:
    """Reference rows, no llm-init code: what the SDK and the OTLP exporter alone cost for a
    span with a no-op hook's attributes. Creating and ending it (batch processor, exporter kept
    out); encoding it as OTLP protobuf (the batch thread's work); and one OTLP/HTTP request
    (made once per batch, so once per initialization, not per hook)."""
    keep = _Keep()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(keep))
    tracer = provider.get_tracer("bench")
    attrs = {"llm_init.hook": "on_pre_download", "llm_init.callback": "bench.NoOp1"}

    def create(n: int) -> None:
        for _ in range(n):
            with tracer.start_as_current_span("llm_init.hook.on_pre_download", attributes=attrs):
                pass

    def per_call(fn: Callable[[int], Any], n: int) -> tuple[float, float]:
        walls, cpus = [], []
        for _ in range(runs):
            wall, cpu = time.perf_counter(), time.process_time()
            fn(n)
            walls.append((time.perf_counter() - wall) / n)
            cpus.append((time.process_time() - cpu) / n)
        return statistics.median(walls), statistics.median(cpus)

    created = per_call(create, 128)
    provider.force_flush()
    spans = keep.spans[:128]
    encoded = per_call(lambda n: encode_spans(spans[:n]).SerializeToString(), 128)
    exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    posted = per_call(lambda n: exporter.export(spans[:n]), 1)
    exporter.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
    provider.shutdown()
    both = (created[0] + encoded[0], created[1] + encoded[1])
    return [("ref: SDK span, create + end", created),
            ("ref: SDK span, OTLP encoding", encoded),
            (SDK_SPAN, both),
            ("ref: one OTLP/HTTP request", posted)]


SDK_SPAN = "ref: SDK span, create+end+encode"
EVERYTHING_ON = "+ logs (structlog JSON, INFO)"


def start_receiver() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.otlp_receiver", "--no-decode"],
                            cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=41, help="runs per level (median)")
    parser.add_argument("--callbacks", type=int, default=16, help="callbacks of 8 hooks each")
    parser.add_argument("--calls", type=int, default=12,
                        help="hook and step calls of one real initialization")
    parser.add_argument("--start-s", type=float, default=16.5,
                        help="the tiny model's initialization, seconds")
    args = parser.parse_args()
    classes = no_op_callback_classes(args.callbacks)
    tmp = tempfile.TemporaryDirectory()
    sqlite = SQLiteEventStore(os.path.join(tmp.name, "events.sqlite"))
    receiver, endpoint = start_receiver()
    try:
        # What users get: configure_tracing's provider, batch processor and OTLP/HTTP exporter.
        os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"{endpoint}/v1/traces"
        provider = configure_tracing(set_global=False)
        assert provider is not None
        rows = [("bare call", bare_call(classes, args.runs))]
        levels = [
            Level("runtime, telemetry off", store=InMemoryEventStore),
            Level("+ events in SQLite", store=lambda: sqlite),
            Level("+ SDK spans (batch, OTLP/HTTP)", store=lambda: sqlite, provider=provider),
            Level("+ metrics (prometheus_client)", store=lambda: sqlite, provider=provider,
                  metrics=True),
        ]
        for level in levels:
            rows.append((level.name, per_hook(level, classes, args.runs)))
        with open(os.devnull, "w") as devnull:
            configure_logging("INFO", stream=devnull, fmt="json")
            rows.append((EVERYTHING_ON, per_hook(levels[-1], classes, args.runs)))
            unconfigure_logging()
        rows += sdk_span_parts(endpoint, args.runs)
        shutdown(provider)
    finally:
        receiver.terminate()
        receiver.wait()
        sqlite.close()
        tmp.cleanup()
    print(f"cost per hook invocation, median of {args.runs} runs, "
          f"{args.callbacks * len(HOOK_NAMES)} hooks per initialization, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{'level':<34} {'wall us/hook':>13} {'CPU us/hook':>12}")
    for name, (wall, cpu) in rows:
        print(f"{name:<34} {wall * 1e6:>13.1f} {cpu * 1e6:>12.1f}")
    found = dict(rows)
    hook, span = found[EVERYTHING_ON][1], found[SDK_SPAN][1]
    share = hook * args.calls / args.start_s
    print(f"fully observed hook / SDK span (CPU): {hook / span:.2f}x (target <= 2x)")
    print(f"observation of one initialization ({args.calls} calls): {hook * args.calls * 1e3:.2f} "
          f"ms CPU, {share:.4%} of a {args.start_s} s start (target <= 1 %)")


if __name__ == "__main__":
    main()
