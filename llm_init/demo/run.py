"""``llm-init demo``: a tiny model deployed on a local Ray cluster through llm-init, end to end.

Builds the tiny random-weight model, starts Ray (with Prometheus metrics on
``--metrics-port``), deploys it with ``llm_init.serve.build_openai_app`` recording to a SQLite
event store, sends one chat completion with the ``openai`` client, and prints the
initialization's timeline and where to look next. CPU only; about a minute on two cores.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import pathlib
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from llm_init.context import NodeInitializationContext

if TYPE_CHECKING:  # rich is imported when the report is printed, not with the demo module
    from rich.console import Console
    from rich.tree import Tree

MODEL_ID = "tiny"
APP_NAME = "llm-init-demo"
DOWNLOAD_MODULE = "llm_init.steps.download"

# vLLM on the CPU in seconds rather than minutes: one OMP thread, no thread binding, a small KV
# cache, no model hub.
FAST_START_ENV = {
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "OMP_NUM_THREADS": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
}
FAST_ENGINE_KWARGS: dict[str, Any] = {
    "dtype": "bfloat16",
    "enforce_eager": True,
    "max_model_len": 256,
    "max_num_seqs": 4,
    "max_num_batched_tokens": 256,
}


class UseLocalModel:
    """Points the context at a model directory already on disk and skips the download."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_pre_download(self, ctx: NodeInitializationContext) -> bool:
        """Fires before the download; the model is local, so nothing is fetched."""
        ctx.download_result = self.path
        return False


def has_download_step() -> bool:
    """Whether this installation has llm-init's download step."""
    return importlib.util.find_spec(DOWNLOAD_MODULE) is not None


def replica_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of the replica: the fast CPU start, this process's ``PYTHONPATH`` (so a
    checkout is importable there) and ``OTEL_*`` settings, and ``extra``."""
    env = dict(FAST_START_ENV)
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update({k: v for k, v in os.environ.items() if k.startswith("OTEL_")})
    env.update(extra or {})
    return env


def app_args(model_dir: str | os.PathLike[str], *, event_store: str,
             status_port: int | None = None, settings: Mapping[str, Any] | None = None,
             llm_config: Mapping[str, Any] | None = None,
             env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The application args of the demo, as a Serve config file would hold them: one tiny model
    on one CPU, llm-init's settings under ``"llm_init"``. ``settings`` and ``llm_config`` are
    merged over the defaults."""
    model_dir = os.fspath(model_dir)
    llm_init: dict[str, Any] = {"event_store": event_store, "status_port": status_port,
                                "labels": {"demo": APP_NAME}}
    if not has_download_step():
        llm_init["callback_class"] = [f"{__name__}:UseLocalModel"]
        llm_init["callback_kwargs"] = [{"path": model_dir}]
    llm_init.update(settings or {})
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": MODEL_ID, "model_source": model_dir},
        "engine_kwargs": dict(FAST_ENGINE_KWARGS),
        # On the CPU, Ray Serve LLM asks for a GPU unless the bundles say otherwise.
        "placement_group_config": {"bundles": [{"CPU": 1}]},
        "runtime_env": {"env_vars": replica_env(env)},
        "deployment_config": {"num_replicas": 1},
        "log_engine_metrics": False,
    }
    config.update(llm_config or {})
    return {
        "llm_configs": [config],
        # The LLM replica holds the logical CPUs; the ingress needs none.
        "ingress_deployment_config": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}},
        "llm_init": llm_init,
    }


@contextlib.contextmanager
def local_cluster(*, metrics_port: int | None, http_port: int, num_cpus: int = 8
                  ) -> Iterator[None]:
    """A local Ray cluster (logical CPUs are bookkeeping: more than the cores is fine) and Serve
    on loopback; both shut down after."""
    import ray
    from ray import serve

    # address="local": a new cluster of our own, even where another one runs on this machine.
    options: dict[str, Any] = {"address": "local", "num_cpus": num_cpus,
                               "include_dashboard": False, "log_to_driver": False,
                               "logging_level": logging.WARNING}
    if metrics_port is not None:
        options["_metrics_export_port"] = metrics_port
    with token_auth_notice_dropped():
        ray.init(**options)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": http_port})
        yield
    finally:
        # Shutting Serve down kills its controller in the middle of its own graceful_shutdown
        # task; Ray reports that to the driver as a raylet line, after the demo's summary.
        with raylet_lines_dropped():
            with contextlib.suppress(Exception):
                serve.shutdown()  # type: ignore[no-untyped-call]  # Ray leaves it untyped
            ray.shutdown()  # joins the thread that prints those lines


RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def _not_the_token_auth_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled")


@contextlib.contextmanager
def token_auth_notice_dropped() -> Iterator[None]:
    """While it lasts, Ray's notice that a new local cluster has token authentication on (the
    default, nothing to do about it on the demo's loopback cluster) is left out; Ray's warning
    that authentication is off still shows."""
    logger = logging.getLogger(RAY_AUTH_LOGGER)
    logger.addFilter(_not_the_token_auth_notice)
    try:
        yield
    finally:
        logger.removeFilter(_not_the_token_auth_notice)


# Loggers whose INFO lines (one per HTTP request, per Serve event, vLLM's imports) bury the
# demo's output; the openai client sends its requests with httpx2.
QUIET_LOGGERS = ("ray.serve", "ray.llm", "vllm", "httpx", "httpx2")


def _warnings_and_above(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


def quiet_libraries() -> None:
    """Keep the chatty libraries' INFO lines off the demo's console, warnings still shown.

    Their loggers below the named ones too: Ray Serve LLM gives each module a logger of its
    own, with its own handler and level. A filter as well as a level: Ray configures logging
    when it starts and may set the levels back."""
    existing = [name for name in logging.root.manager.loggerDict
                if name.startswith(tuple(f"{q}." for q in QUIET_LOGGERS))]
    for name in (*QUIET_LOGGERS, *existing):
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        if _warnings_and_above not in logger.filters:
            logger.addFilter(_warnings_and_above)


class _RayletLinesDropped(io.TextIOBase):
    """Standard output without the lines Ray's driver prints for the raylet."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if "(raylet)" not in line:
                self._out.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self._out.flush()

    def close_pending(self) -> None:
        if self._pending and "(raylet)" not in self._pending:
            self._out.write(self._pending)
        self._pending = ""


@contextlib.contextmanager
def raylet_lines_dropped() -> Iterator[None]:
    """While it lasts, lines printed with Ray's ``(raylet)`` prefix are left out of standard
    output; every other line goes through."""
    out = sys.stdout
    filtered = _RayletLinesDropped(out)
    sys.stdout = filtered
    try:
        yield
    finally:
        sys.stdout = out
        filtered.close_pending()
        out.flush()


def latest_init_id(store_location: str, model_id: str = MODEL_ID) -> str | None:
    """The newest initialization of ``model_id`` in the store."""
    from llm_init.fleet import InitQuery, find_initializations
    from llm_init.stores import open_store

    store = open_store(store_location, create=False)
    try:
        found = find_initializations(store, InitQuery(model_id=model_id, limit=1))
    finally:
        store.close()
    return found[0].init_id if found else None


def waterfall(store_location: str, init_id: str, width: int) -> Tree:
    """The initialization's timeline, as ``llm-init timeline`` shows it at ``width``."""
    from llm_init.cli.views import timeline_tree
    from llm_init.replay import read_events, replay
    from llm_init.stores import open_store
    from llm_init.telemetry.names import ENV_TRACE_URL

    store = open_store(store_location, create=False)
    try:
        found = replay(read_events(store, init_id))
    finally:
        store.close()
    return timeline_tree(found, trace_url=os.environ.get(ENV_TRACE_URL), width=width)


def demo_console() -> Console:
    """The demo's console: a terminal's width, else ``COLUMNS``, else 120 columns when piped
    or logged."""
    from rich.console import Console

    console = Console()
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console
    return Console(width=max(console.width, 120))


def fitted_entry(label: str, values: list[str], width: int, *, continuation: str = "") -> str:
    """``label`` and its values on as many lines as ``width`` needs, broken between values
    (never inside a path, a URL or a metric name); ``continuation`` ends each broken line, so
    that a shell command stays one command."""
    from rich.cells import cell_len

    head = f"  {label + ':':<14}"
    lines = [head + values[0]]
    for value in values[1:]:
        if cell_len(f"{lines[-1]} {value}{continuation}") > width:
            lines[-1] += continuation
            lines.append(" " * len(head) + value)
        else:
            lines[-1] += f" {value}"
    return "\n".join(lines)


def reply_line(content: str | None, width: int) -> str:
    """The step line of the chat completion's reply, cut to fit ``width`` after the step's
    11-cell time prefix (random weights answer with gibberish, control characters included)."""
    note = " (random weights: gibberish)"
    shown = repr(content or "")
    room = max(width - 11 - len("chat completion: ") - len(note), 12)
    if len(shown) > room:
        shown = shown[:room - 2] + "…" + shown[-1]
    return f"chat completion: {shown}{note}"


def metric_families(names: list[str]) -> list[str]:
    """Metric names without the series suffixes of a histogram: one name per metric."""
    suffixes = ("_bucket", "_count", "_sum")
    return sorted({n.removesuffix(next((s for s in suffixes if n.endswith(s)), "")) for n in names})


def llm_init_metrics(metrics_port: int, *, wait_s: float) -> list[str]:
    """llm-init's metric names on Ray's Prometheus endpoint (Ray exports every few seconds)."""
    deadline = time.monotonic() + wait_s
    found: list[str] = []
    while True:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                        timeout=5) as response:
                text = response.read().decode()
            found = sorted({line.split("{")[0].split(" ")[0] for line in text.splitlines()
                            if line.startswith("ray_llm_init_")})
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1.0)


def engine_subphases(store_location: str, init_id: str) -> list[tuple[str, float, str]]:
    """The engine step's sub-phases in the log: name, seconds, and where the number came from."""
    from llm_init.events import StepProgressed
    from llm_init.replay import read_events
    from llm_init.stores import open_store

    store = open_store(store_location, create=False)
    try:
        return [(str(e.details["subphase"]), float(e.details.get("duration_s") or 0.0),
                 str(e.details.get("source", ""))) for e in read_events(store, init_id)
                if isinstance(e, StepProgressed) and "subphase" in e.details]
    finally:
        store.close()


def print_report(store_path: str, init_id: str, *, metrics_port: int | None,
                 http_port: int, metrics_wait_s: float = 0.0) -> None:
    """The initialization's timeline, its engine sub-phases, and where to look next."""
    console = demo_console()
    print()
    console.print(waterfall(store_path, init_id, console.width))
    print("\nengine sub-phases (vLLM's start-up, from its log lines and llm-init's clock):")
    for name, seconds, source in engine_subphases(store_path, init_id):
        print(f"  {name:<32} {seconds:8.2f} s  {source}")
    width = console.width
    print("\nwhere to look next:")
    print(fitted_entry("event store", [store_path], width))
    for command in ("timeline", "events"):
        print(fitted_entry(command, ["llm-init", command, init_id[:12], "--store", store_path],
                           width, continuation=" \\"))
    if metrics_port is not None:
        if importlib.util.find_spec("llm_init.telemetry.metrics") is None:
            found = ["this", "installation", "has", "no", "llm_init.telemetry.metrics"]
        else:
            families = metric_families(llm_init_metrics(metrics_port, wait_s=metrics_wait_s))
            found = ([f"{n}," for n in families[:-1]] + families[-1:] if families
                     else ["no", "llm-init", "metrics", "exported", "yet"])
        found[0], found[-1] = f"({found[0]}", f"{found[-1]})"
        print(fitted_entry("metrics", [f"http://127.0.0.1:{metrics_port}/metrics", *found],
                           width))
    print(fitted_entry("traces", _traces_note().split(" "), width))
    print(fitted_entry("OpenAI API", [f"http://127.0.0.1:{http_port}/v1", "(model",
                                      f"{MODEL_ID!r})"], width))


def run_demo(*, workdir: str | None = None, http_port: int = 8000, metrics_port: int = 8080,
             keep: bool = False, metrics_wait_s: float = 20.0) -> int:
    """The demo; returns the exit code."""
    with info_lines_off():
        return _run_demo(workdir=workdir, http_port=http_port, metrics_port=metrics_port,
                         keep=keep, metrics_wait_s=metrics_wait_s)


@contextlib.contextmanager
def info_lines_off() -> Iterator[None]:
    """While it lasts, no logger of this process prints below WARNING: the demo's console
    is its own report, and libraries set up loggers of their own while it runs (Ray Serve
    LLM's app builder, one per module, at INFO) that no earlier setting reaches."""
    before = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(before)


def _run_demo(*, workdir: str | None, http_port: int, metrics_port: int, keep: bool,
              metrics_wait_s: float) -> int:
    started = time.monotonic()
    base = pathlib.Path(workdir or pathlib.Path.home() / ".cache" / "llm-init" / "demo")
    base.mkdir(parents=True, exist_ok=True)
    store_path = str(base / "events.sqlite")
    step = _stepper(started)

    from llm_init.demo.tiny_model import build_tiny_model

    model_dir = build_tiny_model(base / "tiny-llama")
    step(f"tiny model ready in {model_dir}")
    from openai import OpenAI

    from llm_init.serve import build_openai_app

    step("imported Ray Serve LLM and vLLM")
    quiet_libraries()
    args = app_args(model_dir, event_store=f"sqlite:///{store_path}")
    if not has_download_step():
        step(f"{DOWNLOAD_MODULE} is not installed: the model is used in place "
             "(the download phase shows as skipped)")
    with local_cluster(metrics_port=metrics_port, http_port=http_port):
        from ray import serve

        step("Ray is up")
        deploy_started = time.monotonic()
        serve.run(build_openai_app(args), name=APP_NAME, route_prefix="/")
        quiet_libraries()  # again: starting Ray and Serve configured logging
        step(f"deployed through llm-init: serve.run took {time.monotonic() - deploy_started:.1f} s")
        client = OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="not-needed")
        reply = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Hello, tiny model!"}],
            max_tokens=12, temperature=0)
        step(reply_line(reply.choices[0].message.content, demo_console().width))
        init_id = latest_init_id(store_path)
        if init_id is None:
            print("error: the event store holds no initialization of the model")
            return 1
        print_report(store_path, init_id, metrics_port=metrics_port, http_port=http_port,
                     metrics_wait_s=metrics_wait_s)
        print(f"total: {time.monotonic() - started:.1f} s")
        if keep:
            print("serving until Ctrl-C")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    return 0


def _traces_note() -> str:
    """What the replicas do with their spans: the demo forwards its ``OTEL_*`` variables, and
    every process follows ``tracing_configured``'s rule (off unless configured)."""
    endpoint = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    if importlib.util.find_spec("llm_init.telemetry.tracing") is None:
        return "off (this installation has no llm_init.telemetry.tracing)"
    from llm_init.telemetry.tracing import tracing_configured

    if not tracing_configured():
        return "off (set OTEL_EXPORTER_OTLP_ENDPOINT to export the spans)"
    if endpoint:
        return f"exported over OTLP to {endpoint}"
    return f"exported by OTEL_TRACES_EXPORTER={os.environ.get('OTEL_TRACES_EXPORTER', '')}"


def _stepper(started: float) -> Any:
    def step(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", flush=True)
    return step
