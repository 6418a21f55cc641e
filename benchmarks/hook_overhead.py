"""What one hook invocation costs, at each level of telemetry.

Runs initializations with 16 callbacks that implement all eight hooks as no-ops (128 hook
calls) and with none; the difference divided by 128 is the cost of one hook call through the
runtime. Levels, each adding to the one before:

1. bare call: calling the 128 bound hook methods in a loop;
2. runtime, telemetry off: events in memory, no SDK, no metrics, logging not configured;
3. + events in SQLite (a file in a temporary directory, WAL, group commit);
4. + SDK spans: ``configure_tracing``'s provider (batch processor, OTLP/HTTP exporter), sending to
   a receiver in another process on loopback that only counts what it gets, as a collector
   elsewhere would cost this process (flushed at the end of each initialization, as the
   runtime does);
5. + metrics: ``MetricsCallback`` on a ``prometheus_client`` registry;
6. + logs: ``configure_logging`` JSON lines at INFO, written to /dev/null: a fully observed
   hook call.

Reference rows, without llm-init code: the OpenTelemetry SDK's own span with a no-op hook's
attributes, on a provider with the same resource, under an open parent span as a hook span is
under its phase's, created and ended (``start_as_current_span``),
encoded as OTLP protobuf, both together, and one OTLP/HTTP request (once per initialization,
not per hook). A last row runs one whole initialization, fully observed, of the tiny model's
shape (its hook calls, its three steps and their progress reports, all no-ops): all it costs
is observation.

Every row is measured once per round and the rounds interleave (levels in a new random order
each round, with and without hooks in alternating order), so a burst of load from other
processes lands on all rows alike. Printed: medians over rounds with the 25th-75th percentile
spread, in CPU time of the whole process (every thread: the event writer, the span batch
processor), which is steadier on a shared machine, and in wall-clock time. Two targets, in
one table: a fully observed hook call at most twice the SDK's own span (create, end, encode;
the median of each round's ratio), and one whole initialization's observation (the larger of
its CPU and wall time) at most 1 % of the tiny model's start. That start is read from a
recorded event log (``--start-log``: the last completed initialization in that store, e.g. the
one ``llm-init demo`` wrote) or given (``--start-s`` with ``--hook-calls``, ``--progress``):
starting vLLM inside the benchmark would take longer than the rest of it.

``--ablate`` adds rows for the caches of the hot path, each the fully observed level with one
cache swapped for the plain code (or a dropped one put back), interleaved with the others (see
``ABLATIONS``).

Usage: ``python benchmarks/hook_overhead.py [--rounds 41] [--callbacks 16] [--ablate]
[--start-log sqlite:///path/events.sqlite | --start-s 11.34 --hook-calls 1 --progress 12]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry import trace  # noqa: E402
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
from llm_init import changes as changes_module  # noqa: E402
from llm_init.context import RECORDED_FIELDS  # noqa: E402
from llm_init.events import HookStarted, InitializationCompleted, StepProgressed, StepStarted  # noqa: E402
from llm_init.recorder import EventRecorder  # noqa: E402
from llm_init.stores import open_store  # noqa: E402
from llm_init.stores.codec import decode  # noqa: E402
from llm_init.summary import json_safe  # noqa: E402
from llm_init.telemetry import spans  # noqa: E402
from llm_init.telemetry.backends import PrometheusBackend  # noqa: E402
from llm_init.telemetry.logs import configure_logging, unconfigure_logging  # noqa: E402
from llm_init.telemetry.metrics import MetricsCallback  # noqa: E402
from llm_init.telemetry.tracing import configure_tracing, shutdown  # noqa: E402

Sample = tuple[float, float]  # wall and CPU seconds


class SettingStep:
    """A default step that sets one context field and reports its progress ``reports`` times."""

    def __init__(self, field: str, value: Any, reports: int = 0) -> None:
        self.field, self.value, self.reports = field, value, reports

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        for i in range(self.reports):
            report(done=i + 1, of=self.reports)
        setattr(ctx, self.field, self.value)


def steps(progress: int = 0) -> DefaultSteps:
    """The three default steps as no-ops, ``progress`` reports spread over them."""
    share = [progress // 3 + (i < progress % 3) for i in range(3)]
    return DefaultSteps(
        download=SettingStep("download_result", {"path": "/models/tiny"}, share[0]),
        placement_group=SettingStep("placement_group", {"bundles": [{"CPU": 1}]}, share[1]),
        engine=SettingStep("engine", "engine", share[2]))


def no_op_callback_classes(count: int, hooks: Sequence[str] = HOOK_NAMES) -> list[type]:
    def no_op(self: Any, ctx: Any) -> None:
        return None

    return [type(f"NoOp{i}", (), dict.fromkeys(hooks, no_op)) for i in range(count)]


def shaped_callbacks(hook_calls: int) -> list[type]:
    """Callbacks that make ``hook_calls`` hook calls in one initialization."""
    full, rest = divmod(hook_calls, len(HOOK_NAMES))
    classes = no_op_callback_classes(full)
    if rest:
        classes += no_op_callback_classes(1, HOOK_NAMES[:rest])
    return classes


REGISTRY = CollectorRegistry()


class Level:
    """One row of the table: how to run an initialization at this level."""

    def __init__(self, name: str, *, store: Callable[[], Any], provider: Any = None,
                 metrics: bool = False, logs: bool = False,
                 patch: Callable[[], contextlib.AbstractContextManager[None]] | None = None
                 ) -> None:
        self.name, self.store, self.provider = name, store, provider
        self.metrics, self.logs, self.patch = metrics, logs, patch

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """This level's process-wide set-up (log lines, a swapped cache) while it runs."""
        with contextlib.ExitStack() as stack:
            if self.logs:
                devnull = stack.enter_context(open(os.devnull, "w"))
                configure_logging("INFO", stream=devnull, fmt="json")
                stack.callback(unconfigure_logging)
            if self.patch is not None:
                stack.enter_context(self.patch())
            yield

    def run(self, config: LLMConfig, progress: int = 0) -> Sample:
        """Wall and CPU seconds (all threads of the process) of one initialization."""
        observers = ([MetricsCallback(PrometheusBackend(REGISTRY, port=None))]
                     if self.metrics else [])
        wall, cpu = time.perf_counter(), time.process_time()
        asyncio.run(initialize_node(config, event_store=self.store(), steps=steps(progress),
                                    observers=observers, tracer_provider=self.provider))
        return time.perf_counter() - wall, time.process_time() - cpu


def configs(classes: list[type]) -> tuple[LLMConfig, LLMConfig]:
    """An initialization with ``classes`` as callbacks, and one without."""
    return (LLMConfig(model_id="bench", callback_class=classes,
                      callback_kwargs=[{}] * len(classes), enable_metrics=False),
            LLMConfig(model_id="bench", enable_metrics=False))


def per_hook(level: Level, with_hooks: LLMConfig, without: LLMConfig, hooks: int,
             flip: bool, pairs: int) -> Sample:
    """Seconds per hook call in this round: (with hooks - without) / hook calls, summed over
    ``pairs`` pairs of runs; ``flip`` runs the one without hooks first."""
    wall = cpu = 0.0
    with level.active():
        for _ in range(pairs):
            first, second = (without, with_hooks) if flip else (with_hooks, without)
            a, b = level.run(first), level.run(second)
            (w_with, c_with), (w_without, c_without) = (b, a) if flip else (a, b)
            wall += w_with - w_without
            cpu += c_with - c_without
    return wall / (hooks * pairs), cpu / (hooks * pairs)


def bare_call(classes: list[type]) -> Sample:
    ctx = NodeInitializationContext.for_config("bench", LLMConfig(model_id="bench"))
    bound = [getattr(cls(), hook) for cls in classes for hook in HOOK_NAMES]
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(100):
        for fn in bound:
            fn(ctx)
    n = 100 * len(bound)
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


class _Keep(SpanExporter):
    """Keeps the spans it is given, so that their encoding can be timed alone."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


class SdkSpan:
    """Reference rows, no llm-init code: what the SDK and the OTLP exporter alone cost for a
    span with a no-op hook's attributes, on a provider with the runtime's resource, as the
    child of an open span. Creating and ending it (batch processor, exporter kept out);
    encoding it as OTLP protobuf (the batch thread's work); and one OTLP/HTTP request (made
    once per batch, so once per initialization, not per hook)."""

    def __init__(self, endpoint: str, resource: Any, count: int) -> None:
        self.keep = _Keep()
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(self.keep))
        self.tracer = self.provider.get_tracer("bench")
        self.exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
        self.count = count

    def round(self) -> dict[str, Sample]:
        attrs = {"llm_init.hook": "on_pre_download", "llm_init.callback": "bench.NoOp1"}
        n = self.count
        # Under an open span, as every hook span is under its phase's: a child span costs the
        # SDK more than a root span (the parent's context is looked up, the sampler asks it).
        with self.tracer.start_as_current_span("llm_init.phase.pre_initialization"):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                with self.tracer.start_as_current_span("llm_init.hook.on_pre_download",
                                                       attributes=attrs):
                    pass
            created = (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n
        self.provider.force_flush()
        spans, self.keep.spans = self.keep.spans[:n], []
        wall, cpu = time.perf_counter(), time.process_time()
        encode_spans(spans).SerializeToString()
        encoded = (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n
        wall, cpu = time.perf_counter(), time.process_time()
        self.exporter.export(spans)
        posted = time.perf_counter() - wall, time.process_time() - cpu
        return {REF_CREATE: created, REF_ENCODE: encoded,
                SDK_SPAN: (created[0] + encoded[0], created[1] + encoded[1]), REF_POST: posted}

    def close(self) -> None:
        self.exporter.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
        self.provider.shutdown()


REF_CREATE = "ref: SDK span, create + end"
REF_ENCODE = "ref: SDK span, OTLP encoding"
SDK_SPAN = "ref: SDK span, create+end+encode"
REF_POST = "ref: one OTLP/HTTP request"
EVERYTHING_ON = "+ logs: fully observed"
WHOLE = "one whole initialization, fully observed"


@contextlib.contextmanager
def _plain_current_span() -> Iterator[None]:
    """Spans opened by the SDK's ``start_as_current_span`` instead of ``spans.CurrentSpan``."""
    def start(tracer: Any, name: str, attributes: Any, context: Any = None) -> Any:
        if tracer is None:
            return spans.NO_SPAN
        return tracer.start_as_current_span(name, context=context, attributes=attributes,
                                            record_exception=False,
                                            set_status_on_exception=False)

    with _swapped(spans, "start", start):
        yield


@contextlib.contextmanager
def _plain_snapshots() -> Iterator[None]:
    """Every recorded field summarized after every call, without the identity cache."""
    def take(self: Any) -> dict[str, Any]:
        return {name: json_safe(getattr(self.ctx, name), name) for name in RECORDED_FIELDS}

    with _swapped(changes_module.Snapshots, "take", take):
        yield


@contextlib.contextmanager
def _cached_hex_ids() -> Iterator[None]:
    """The recorder's dropped hex-id cache put back: the last span's ids kept in hex, so that
    the events of one call (one span) and one initialization (one trace) format them once."""
    def emit(self: Any, event_type: Any, /, **fields: Any) -> Any:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            ids = self.__dict__.get("_hex_ids", (None, 0, "", ""))
            if ids[0] is not span_context:
                trace_id = span_context.trace_id
                ids = self._hex_ids = (
                    span_context, trace_id,
                    ids[2] if ids[1] == trace_id else format(trace_id, "032x"),
                    format(span_context.span_id, "016x"))
            fields["trace_id"], fields["span_id"] = ids[2], ids[3]
        with self._lock:
            self._sequence += 1
            event = event_type(init_id=self.init_id, sequence=self._sequence,
                               timestamp=datetime.now(UTC), node_id=self.node_id, **fields)
            self._pending.append(event)
        return event

    with _swapped(EventRecorder, "emit", emit):
        yield


@contextlib.contextmanager
def _swapped(owner: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


# What ``--ablate`` swaps, one at a time, in the fully observed level: each cache the hot path
# keeps for the plain code, and the one it dropped put back.
ABLATIONS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "without CurrentSpan (SDK's start_as_current_span)": _plain_current_span,
    "without the snapshots' identity cache": _plain_snapshots,
    "with the recorder's hex-id cache (dropped)": _cached_hex_ids,
}


class Start:
    """The tiny model's start: its initialization's seconds and shape."""

    def __init__(self, seconds: float, hook_calls: int, progress: int, source: str) -> None:
        self.seconds, self.hook_calls, self.progress = seconds, hook_calls, progress
        self.source = source

    @classmethod
    def from_log(cls, url: str) -> Start:
        """The last completed initialization recorded in the store at ``url``."""
        store = open_store(url, create=False)
        for init_id in store.list_init_ids():
            events = [decode(r) for r in store.read(init_id)]
            done = [e for e in events if isinstance(e, InitializationCompleted)]
            if done:
                kinds = [type(e) for e in events]
                return cls(done[0].duration_s, kinds.count(HookStarted),
                           kinds.count(StepProgressed),
                           f"from the recorded log {url}, init {init_id[:8]}, "
                           f"{kinds.count(StepStarted)} step calls")
        raise SystemExit(f"no completed initialization in {url}")


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def start_receiver() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.otlp_receiver", "--no-decode"],
                            cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=41, help="interleaved rounds (median)")
    parser.add_argument("--pairs", type=int, default=2,
                        help="runs with and without hooks per level and round")
    parser.add_argument("--callbacks", type=int, default=16, help="callbacks of 8 hooks each")
    parser.add_argument("--ablate", action="store_true", help="rows without each cache")
    parser.add_argument("--start-log", help="event store whose last completed initialization "
                                            "is the tiny model's start")
    parser.add_argument("--start-s", type=float, default=11.34,
                        help="the tiny model's initialization, seconds (without --start-log; "
                             "default: a recorded llm-init demo on the 2-core reference machine)")
    parser.add_argument("--hook-calls", type=int, default=1,
                        help="hook calls of the tiny model's initialization (without --start-log)")
    parser.add_argument("--progress", type=int, default=12,
                        help="progress reports of its steps (without --start-log)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = (Start.from_log(args.start_log) if args.start_log else
             Start(args.start_s, args.hook_calls, args.progress, "as given on the command line"))
    classes = no_op_callback_classes(args.callbacks)
    hooks = len(classes) * len(HOOK_NAMES)
    with_hooks, without = configs(classes)
    shaped, _ = configs(shaped_callbacks(start.hook_calls))
    tmp = tempfile.TemporaryDirectory()
    sqlite = SQLiteEventStore(os.path.join(tmp.name, "events.sqlite"))
    receiver, endpoint = start_receiver()
    shuffle = random.Random(args.seed).shuffle
    samples: dict[str, list[Sample]] = {}
    load = [os.getloadavg()[0]]
    try:
        # What users get: configure_tracing's provider, batch processor and OTLP/HTTP exporter.
        os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"{endpoint}/v1/traces"
        provider = configure_tracing(set_global=False)
        assert provider is not None
        reference = SdkSpan(endpoint, provider.resource, hooks)
        levels = [
            Level("runtime, telemetry off", store=InMemoryEventStore),
            Level("+ events in SQLite", store=lambda: sqlite),
            Level("+ SDK spans (batch, OTLP/HTTP)", store=lambda: sqlite, provider=provider),
            Level("+ metrics (prometheus_client)", store=lambda: sqlite, provider=provider,
                  metrics=True),
            Level(EVERYTHING_ON, store=lambda: sqlite, provider=provider, metrics=True,
                  logs=True),
        ]
        ablations = [Level(f"  {name}", store=lambda: sqlite, provider=provider, metrics=True,
                           logs=True, patch=patch)
                     for name, patch in ABLATIONS.items()] if args.ablate else []
        whole = levels[-1]
        jobs: list[tuple[str, Callable[[bool], Any]]] = [
            (level.name, functools.partial(_hook_job, level, with_hooks, without, hooks,
                                           args.pairs))
            for level in [*levels, *ablations]]
        jobs.append(("bare call", lambda flip: bare_call(classes)))
        jobs.append(("ref", lambda flip: reference.round()))
        jobs.append((WHOLE, lambda flip: _whole(whole, shaped, start.progress)))
        for _ in range(2):  # warm up: imports, first-use set-up
            for _, job in jobs:
                job(False)
        for r in range(args.rounds):
            shuffle(jobs)
            for name, job in jobs:
                found = job(r % 2 == 1)
                for key, sample in (found.items() if isinstance(found, dict) else
                                    [(name, found)]):
                    samples.setdefault(key, []).append(sample)
        load.append(os.getloadavg()[0])
        reference.close()
        shutdown(provider)
    finally:
        receiver.terminate()
        receiver.wait()
        sqlite.close()
        tmp.cleanup()
    report(args, samples, [level.name for level in levels], [a.name for a in ablations],
           hooks, start, load)


def _hook_job(level: Level, with_hooks: LLMConfig, without: LLMConfig, hooks: int, pairs: int,
              flip: bool) -> Sample:
    return per_hook(level, with_hooks, without, hooks, flip, pairs)


def _whole(level: Level, config: LLMConfig, progress: int) -> Sample:
    with level.active():
        return level.run(config, progress)


def report(args: argparse.Namespace, samples: dict[str, list[Sample]], levels: list[str],
           ablations: list[str], hooks: int, start: Start, load: list[float]) -> None:
    def cpu(name: str) -> list[float]:
        return [c for _, c in samples[name]]

    def wall(name: str) -> list[float]:
        return [w for w, _ in samples[name]]

    print(f"cost per hook call: medians of {args.rounds} interleaved rounds [25th-75th "
          f"percentile], {hooks} hooks per initialization, {args.pairs} pairs per round, "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f} before and {load[-1]:.1f} after, "
          f"Python {sys.version.split()[0]}")
    print(f"{'level':<52} {'CPU us/hook':>24} {'wall us/hook':>13}")
    rows = ["bare call", *levels, *ablations, REF_CREATE, REF_ENCODE, SDK_SPAN]
    for name in rows:
        q1, med, q3 = quartiles(cpu(name))
        spread = f"[{q1 * 1e6:.1f}-{q3 * 1e6:.1f}]"
        print(f"{name:<52} {med * 1e6:>9.1f} {spread:>14} "
              f"{statistics.median(wall(name)) * 1e6:>13.1f}")
    for name in (REF_POST, WHOLE):
        print(f"{name + ' (ms)':<52} {statistics.median(cpu(name)) * 1e3:>9.2f} "
              f"{'':>14} {statistics.median(wall(name)) * 1e3:>13.2f}")
    if ablations:
        print("\ncaches: each swapped for the plain code (or put back), against the fully "
              "observed level in the same round (CPU us/hook)")
        for name in ablations:
            q1, med, q3 = quartiles([a - b for a, b in zip(cpu(name), cpu(EVERYTHING_ON),
                                                            strict=True)])
            print(f"{name:<52} {med * 1e6:>+9.1f} [{q1 * 1e6:+.1f} to {q3 * 1e6:+.1f}]")
    ratio = [a / b for a, b in zip(cpu(EVERYTHING_ON), cpu(SDK_SPAN), strict=True)]
    q1, med_ratio, q3 = quartiles(ratio)
    whole = [max(w, c) for w, c in samples[WHOLE]]
    w1, med_whole, w3 = quartiles(whole)
    share = med_whole / start.seconds
    print(f"\n{'target':<52} {'measured [25th-75th]':>30} {'target':>8} {'result':>7}")
    print(f"{'fully observed hook call / SDK span (CPU)':<52} "
          f"{f'{med_ratio:.2f}x [{q1:.2f}-{q3:.2f}]':>30} {'<= 2x':>8} "
          f"{'met' if med_ratio <= 2 else 'MISSED':>7}")
    print(f"{'one initialization observed / tiny model start':<52} "
          f"{f'{share:.3%} [{w1 / start.seconds:.3%}-{w3 / start.seconds:.3%}]':>30} "
          f"{'<= 1 %':>8} {'met' if share <= 0.01 else 'MISSED':>7}")
    print(f"  {med_whole * 1e3:.2f} ms (the larger of CPU and wall) of a {start.seconds:.2f} s "
          f"start with {start.hook_calls} hook calls, 3 steps, {start.progress} progress "
          f"reports; the start {start.source}")


if __name__ == "__main__":
    main()
