"""Specification of the demo's console: the waterfall as ``llm-init timeline`` draws it, and
none of the libraries' chatter (httpx's request lines, Ray's raylet lines at shutdown)."""

from __future__ import annotations

import http.server
import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from llm_init.demo.run import (
    QUIET_LOGGERS,
    info_lines_off,
    print_report,
    quiet_libraries,
    raylet_lines_dropped,
    reply_line,
    token_auth_notice_dropped,
    waterfall,
)
from llm_init.fleet import import_lines
from llm_init.stores import SQLiteEventStore
from tests.support.cli import invoke
from tests.support.logs import records, synthetic_log

INIT = "58741c0e5b3f4f6a9d2e8b7c6a5f4e3d"
DEMO_INIT = "fd61ad2356d04322a18f923f2ba5f6cb"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(autouse=True)
def loggers_restored() -> Iterator[None]:
    """The quieted loggers as they were before each test: other tests read vLLM's lines."""
    names = [*QUIET_LOGGERS, *(n for n in logging.root.manager.loggerDict
                               if n.startswith(tuple(f"{q}." for q in QUIET_LOGGERS)))]
    before = {n: (logging.getLogger(n).level, list(logging.getLogger(n).filters))
              for n in names}
    yield
    for name in logging.root.manager.loggerDict:
        if name.startswith(tuple(f"{q}." for q in QUIET_LOGGERS)) and name not in before:
            before[name] = (logging.NOTSET, [])
    for name, (level, filters) in before.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.filters[:] = filters


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """What reaches a handler on the root logger, as Ray's JSON handler would print it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    yield out
    root.removeHandler(handler)


class Models(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible server with no models."""

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    """The base URL of a local OpenAI-compatible server."""
    server = http.server.HTTPServer(("127.0.0.1", 0), Models)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_the_openai_client_s_request_lines_stay_off_the_console(
        captured: io.StringIO, api: str) -> None:
    """Once the demo quiets the libraries, a request by the openai client (as the demo's chat
    completion) prints no ``HTTP Request:`` line, even after its HTTP library's loggers were
    set back to INFO, as starting Ray may do."""
    from openai import OpenAI

    quiet_libraries()
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.INFO)
    OpenAI(base_url=api, api_key="not-needed", max_retries=0).models.list()
    assert captured.getvalue() == ""


def test_ray_serve_llm_module_loggers_are_quieted_too() -> None:
    """A module logger of Ray Serve LLM with its own handler and INFO level (as the one that
    prints "Deployment Options" when the app is built) prints no INFO line once the demo
    quiets the libraries."""
    out = io.StringIO()
    # As ray.llm's get_logger sets one up when Serve's logger has no handler yet.
    logger = logging.getLogger("ray.serve.ray.llm._internal.serve.llm_init_test")
    logger.addHandler(logging.StreamHandler(out))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    quiet_libraries()
    logger.info("============== Deployment Options ==============")
    assert out.getvalue() == ""


def test_no_info_line_while_the_demo_runs_from_a_logger_made_meanwhile() -> None:
    """While the demo runs, a logger a library sets up only then, with its own handler at
    INFO, prints no INFO line (a warning still shows); afterwards INFO lines print again."""
    out = io.StringIO()
    with info_lines_off():
        logger = logging.getLogger("ray.serve.ray.llm._internal.serve.made_later")
        logger.addHandler(logging.StreamHandler(out))
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.info("============== Ingress Options ==============")
        logger.warning("replica restarted")
    logger.info("after the demo")
    assert out.getvalue().splitlines() == ["replica restarted", "after the demo"]


def test_warnings_of_the_quieted_libraries_still_show(captured: io.StringIO) -> None:
    """The demo keeps the libraries' warnings: only their INFO lines are left out."""
    quiet_libraries()
    logging.getLogger("httpx").warning("connection pool is full")
    assert captured.getvalue().splitlines() == ["connection pool is full"]


def test_raylet_lines_printed_at_shutdown_are_left_out(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """A raylet line Ray's driver prints while the demo shuts its cluster down (Serve's
    controller killed in its graceful_shutdown) is left out; the demo's own lines are not."""
    from ray._private.worker import print_to_stdstream

    with raylet_lines_dropped():
        print("shutting down")
        print_to_stdstream({"lines": [
            "Task ServeController.graceful_shutdown failed. The actor died because it was "
            "killed by ray.kill (test_raylet_lines_printed_at_shutdown)"],
            "pid": "raylet", "is_err": False}, ignore_prefix=False)
    print("total: 61.0 s")
    assert capsys.readouterr().out.splitlines() == ["shutting down", "total: 61.0 s"]


def test_the_demo_waterfall_is_the_timeline_command_s(tmp_path: Path) -> None:
    """The demo prints the waterfall line for line as ``llm-init timeline`` does at the same
    width."""
    path = tmp_path / "events.sqlite"
    events = SQLiteEventStore(path)
    events.append(records(synthetic_log(INIT, model_id="tiny", seconds=0.5)))
    events.close()
    shown = io.StringIO()
    Console(width=80, file=shown).print(waterfall(str(path), INIT, 80))
    assert shown.getvalue() == invoke("timeline", INIT, "--store", str(path), width=80).output


# The series a real demo run found on Ray's metrics endpoint (the report names them).
DEMO_SERIES = [f"ray_llm_init_{name}" for name in (
    "engine_subphase_duration_seconds_bucket", "engine_subphase_duration_seconds_count",
    "engine_subphase_duration_seconds_sum", "hook_duration_seconds_bucket",
    "hook_duration_seconds_count", "hook_duration_seconds_sum", "in_progress",
    "initializations_total", "phase_duration_seconds_bucket", "phase_duration_seconds_count",
    "phase_duration_seconds_sum", "replica_startup_seconds_bucket",
    "replica_startup_seconds_count", "replica_startup_seconds_sum")]


class RayMetrics(http.server.BaseHTTPRequestHandler):
    """Ray's Prometheus endpoint, with the series of a demo run."""

    def do_GET(self) -> None:
        body = "".join(f'{n}{{Component="core_worker"}} 1.0\n' for n in DEMO_SERIES).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def metrics_port() -> Iterator[int]:
    """The port of a local endpoint serving a demo run's metrics."""
    server = http.server.HTTPServer(("127.0.0.1", 0), RayMetrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_report_of_a_demo_run_fits_80_columns(
        tmp_path: Path, metrics_port: int, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """With ``COLUMNS=80``, the report of a real demo run (its recorded log) keeps every line
    within 80 cells, breaks lines between values only (each metric whole, each command one
    command), and still names every metric."""
    monkeypatch.chdir(tmp_path)
    store = Path("a-work-directory-named-long-enough") / "events.sqlite"
    store.parent.mkdir()
    events = SQLiteEventStore(store)
    import_lines(events, (FIXTURES / "demo_log.jsonl").read_text().splitlines())
    events.close()
    monkeypatch.setenv("COLUMNS", "80")
    print_report(str(store), DEMO_INIT, metrics_port=metrics_port, http_port=8000)
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if cell_len(line) > 80] == []
    assert "│                                          node 0bc33f71476b this node (process)" in (
        out.splitlines())
    joined = out.replace(" \\\n" + " " * 16, " ")
    assert f"llm-init timeline {DEMO_INIT[:12]} --store {store}\n" in joined
    assert re.findall(r"ray_llm_init_\w+", out) == [
        f"ray_llm_init_{name}" for name in ("engine_subphase_duration_seconds",
                                            "hook_duration_seconds", "in_progress",
                                            "initializations_total", "phase_duration_seconds",
                                            "replica_startup_seconds")]


def test_the_reply_line_fits_80_columns() -> None:
    """The chat completion's gibberish reply (as a real run answered) is cut so that its step
    line fits 80 columns, still quoted and marked as cut."""
    line = reply_line("gi\x18\x18This loadThis if vumeD\ufffdThis them", 80)
    assert line == "chat completion: 'gi\\x18\\x18This loadTh…' (random weights: gibberish)"
    assert len(f"[ 119.6 s] {line}") <= 80


def test_ray_s_token_auth_notice_is_left_out_while_the_cluster_starts() -> None:
    """Ray's notice that the new local cluster has token authentication on is left out while
    the demo starts Ray; its warning that authentication is off still shows, and afterwards
    the notice shows again."""
    from ray._private.authentication import authentication_token_setup as ray_auth

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger(ray_auth.__name__)  # Ray's loggers do not propagate to the root
    logger.addHandler(handler)
    try:
        with token_auth_notice_dropped():
            ray_auth._warn_token_auth_enabled()
            ray_auth._warn_token_auth_disabled()
        ray_auth._warn_token_auth_enabled()
    finally:
        logger.removeHandler(handler)
    assert [line.split(" for this Ray cluster")[0] for line in out.getvalue().splitlines()] == [
        "Token authentication is disabled", "Token authentication is enabled"]
