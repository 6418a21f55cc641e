"""Specification of the fleet commands of the ``llm-init`` CLI: list filters, diff, stats,
status (once and followed), export and import."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from llm_init import DefaultSteps, LLMConfig, initialize_node_sync
from llm_init.stores import SQLiteEventStore, open_store
from tests.stores.contract import with_fleet
from tests.support.cli import clock_at, invoke, table_rows
from tests.support.logs import records, synthetic_log
from tests.support.steps import SettingStep

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
# Two and a half minutes after the fleet's init "d" started (it is still downloading).
RUNNING_D_FOR_150_S = datetime(2025, 1, 1, 12, 32, 30, tzinfo=UTC)


def cli(*args: str) -> tuple[int, str]:
    result = invoke(*args)
    return result.exit_code, result.output


def ids(out: str) -> list[str]:
    return [json.loads(line)["init_id"] for line in out.splitlines()]


@pytest.fixture
def fleet(tmp_path: Path) -> str:
    path = tmp_path / "events.sqlite"
    with_fleet(SQLiteEventStore(path)).close()
    return str(path)


@pytest.mark.parametrize(("args", "expected"), [
    (["--model", "llama", "--outcome", "completed"], ["e", "a"]),
    (["--slowest", "2"], ["c", "b"]),
    (["--node", "n1", "--app", "chat", "--label", "zone=eu"], ["e"]),
    (["--deployment", "d1", "--host", "h2"], ["d", "b"]),
    (["--since", "2025-01-01T12:15:00", "--until", "2025-01-01T12:35:00"], ["d", "c"]),
], ids=["model+outcome", "slowest", "node+app+label", "deployment+host", "iso-window"])
def test_list_filters(fleet: str, args: list[str], expected: list[str]) -> None:
    """``list`` options select exactly the matching inits, in their order."""
    code, out = cli("list", "--store", fleet, "--json", *args)
    assert (code, ids(out)) == (0, expected)


def test_list_since_a_span_counts_back_from_now(tmp_path: Path) -> None:
    """``--since 1h`` keeps an init started ten minutes ago and drops one from three hours ago."""
    store = SQLiteEventStore(tmp_path / "e.sqlite")
    now = datetime.now(UTC)
    store.append(records(synthetic_log("recent", started_at=now - timedelta(minutes=10))))
    store.append(records(synthetic_log("old", started_at=now - timedelta(hours=3))))
    code, out = cli("list", "--store", str(tmp_path / "e.sqlite"), "--since", "1h", "--json")
    assert (code, ids(out)) == (0, ["recent"])


def test_list_table_names_the_host(fleet: str) -> None:
    """The ``list`` table has a host column, and ``--host`` keeps that host's rows only."""
    code, out = cli("list", "--store", fleet, "--host", "h2")
    assert code == 0
    assert table_rows(out) == [
        ["d", "llama", "running", "2025-01-01 12:30:00", "-", "-", "-", "-", "download", "h2"],
        ["b", "llama", "failed", "2025-01-01 12:10:00", "8.00 s", "2.00 s", "2.00 s", "2.00 s",
         "", "h2"]]


def test_a_bad_time_fails_with_one_line(fleet: str) -> None:
    """An unparseable ``--since`` exits 1 and says what it expects."""
    code, out = cli("list", "--store", fleet, "--since", "yesterday")
    assert code == 1
    assert out == "error: 'yesterday' is neither a span like 1h, 30m, 2d nor an ISO time\n"


def test_diff_json_has_time_and_value_rows(fleet: str) -> None:
    """``diff A B --json`` gives the total time of both and the model they differ in."""
    code, out = cli("diff", "a", "c", "--store", fleet, "--json")
    d = json.loads(out)
    assert code == 0
    assert d["times"][0] == {"kind": "init", "phase": "", "name": "total", "a_s": 5.0,
                             "b_s": 15.0, "delta_s": 10.0}
    assert {"section": "run", "path": "model_id", "a": "llama", "b": "mistral"} in d["values"]


def test_diff_table_lists_phases_and_differences(fleet: str) -> None:
    """The ``diff`` tables name every phase and the differing label."""
    code, out = cli("diff", "a", "c", "--store", fleet)
    assert code == 0
    phases = ("pre_initialization", "download", "placement_group", "engine_init",
              "post_initialization")
    hook = ["10.0 ms", "10.0 ms", "0.0 ms", "1.00x"]
    assert table_rows(out) == [
        ["total", "5.00 s", "15.00 s", "+10.00 s", "3.00x"],
        *[row for phase in phases for row in (
            [phase, "1.00 s", "3.00 s", "+2.00 s", "3.00x"], [f"hook cb.on_pre_{phase}", *hook])],
        ["run", "model_id", "llama", "mistral"],
        ["labels", "application", "chat", "code"],
        ["labels", "deployment", "d1", "d2"],
        ["config", "model_id", "llama", "mistral"],
        *[["context", f"custom_data.{phase}", "1.0", "3.0"] for phase in sorted(phases)]]


def test_stats_json_gives_percentiles_per_phase(fleet: str) -> None:
    """``stats --model M --json`` has one row per phase with its count and percentiles."""
    code, out = cli("stats", "--store", fleet, "--model", "mistral", "--json")
    rows = {r["phase"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["engine_init"] == {"phase": "engine_init", "count": 1, "p50": 3.0, "p95": 3.0,
                                   "p99": 3.0, "mean": 3.0, "max": 3.0}
    assert rows["total"]["p50"] == 15.0


def test_status_lists_the_init_in_progress(fleet: str) -> None:
    """``status --json`` prints one line per running init with its phase and labels."""
    code, out = cli("status", "--store", fleet, "--json")
    [line] = out.splitlines()
    row = json.loads(line)
    assert code == 0
    assert (row["init_id"], row["phase"], row["application"], row["node_id"]) == (
        "d", "download", "chat", "n2")


def test_status_table_counts_inits_in_progress(fleet: str) -> None:
    """The ``status`` table is titled with how many inits are in progress, one row each."""
    with clock_at(RUNNING_D_FOR_150_S):
        code, out = cli("status", "--store", fleet)
    assert code == 0
    assert out.splitlines()[0].rstrip() == "1 in progress"
    assert table_rows(out) == [
        ["d", "llama", "chat", "d1", "n2", "download", "", "2.5 min", "2.5 min ago"]]


def test_export_needs_ids_filters_or_all(fleet: str) -> None:
    """``export`` with nothing to select exits 1 and says how to select."""
    code, out = cli("export", "--store", fleet)
    assert code == 1
    assert out == "error: name init ids, give filters, or pass --all\n"


def test_export_and_import_move_a_fleet_into_postgres(fleet: str, tmp_path: Path,
                                                      postgres_url: str) -> None:
    """``export --all`` from SQLite then ``import`` into PostgreSQL gives the same list."""
    dump = tmp_path / "fleet.jsonl"
    assert cli("export", "--all", "--store", fleet, "-o", str(dump))[0] == 0
    code, out = cli("import", str(dump), "--store", postgres_url, "--json")
    assert (code, sorted(json.loads(out)["imported"])) == (0, ["a", "b", "c", "d", "e"])
    assert ids(cli("list", "--store", postgres_url, "--json")[1]) == ids(
        cli("list", "--store", fleet, "--json")[1])


class SlowStep(SettingStep):
    """A setting step that takes a moment, so a follower sees each phase."""

    async def run(self, ctx: Any, report: Any) -> None:
        await asyncio.sleep(0.4)
        await super().run(ctx, report)


def test_status_follow_streams_phases_as_they_happen(postgres_url: str) -> None:
    """``status --follow --json`` in another process prints the phases of an init as it
    runs against PostgreSQL, ending with its completion."""
    store = open_store(postgres_url)
    store.append(records(synthetic_log("probe", outcome="running",
                                       started_at=datetime.now(UTC)))[:2])
    follower = subprocess.Popen(
        [sys.executable, "-c", "from llm_init.cli import main; main()", "status", "--follow",
         "--json", "--timeout", "60", "--store", postgres_url],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert follower.stdout is not None
        assert json.loads(follower.stdout.readline())["init_id"] == "probe"
        steps = DefaultSteps(download=SlowStep("download_result", "d"),
                             placement_group=SlowStep("placement_group", "p"),
                             engine=SlowStep("engine", "e"))
        ctx = initialize_node_sync(LLMConfig(model_id="m"), event_store=store, steps=steps)
        seen: list[tuple[str, str | None]] = []
        while not seen or seen[-1][0] != "completed":
            row = json.loads(follower.stdout.readline())
            if row["init_id"] == ctx.init_id:
                seen.append((row["outcome"], row["phase"]))
    finally:
        follower.kill()
        follower.wait()
    slow = ("download", "placement_group", "engine_init")
    phases = list(dict.fromkeys(phase for outcome, phase in seen if phase in slow))
    assert phases == list(slow)
    assert seen[-1] == ("completed", None)


def test_status_follow_draws_a_live_table_until_its_timeout(fleet: str) -> None:
    """``status --follow`` without ``--json`` draws the in-progress table and stops at
    ``--timeout``."""
    with clock_at(RUNNING_D_FOR_150_S):
        code, out = cli("status", "--store", fleet, "--follow", "--timeout", "0.5")
    assert code == 0
    assert out.splitlines()[0].rstrip() == "1 in progress  (following; 12:32:30 UTC)"
    assert table_rows(out)[-1] == [
        "d", "llama", "chat", "d1", "n2", "download", "", "2.5 min", "2.5 min ago"]


def test_an_unreachable_database_is_a_one_line_error() -> None:
    """A PostgreSQL store that does not answer makes the command exit 1 with the host named
    and no traceback."""
    code, out = cli("list", "--store", "postgresql://nobody@127.0.0.1:1/events")
    assert code == 1
    (line,) = out.splitlines()
    assert line.startswith(
        "error: event store postgresql://nobody@127.0.0.1:1/events is unreachable: ")
