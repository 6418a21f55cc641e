"""``llm-init timeline`` shows each node the download step reported on."""

from __future__ import annotations

import socket
from pathlib import Path

from llm_init import DefaultSteps, LLMConfig, SQLiteEventStore, initialize_node_sync
from llm_init.steps.download import DownloadStep
from tests.support.cli import entries, invoke
from tests.support.models import write_model
from tests.support.steps import SettingStep


def test_timeline_has_a_line_per_downloading_node(tmp_path: Path) -> None:
    """Under the download step, the node that downloaded (here this host, in process) has an
    entry with its files and bytes."""
    files = write_model(tmp_path / "source", shards=2, shard_size=50_000)
    store = tmp_path / "events.sqlite"
    steps = DefaultSteps(download=DownloadStep(cache_dir=tmp_path / "cache"),
                         placement_group=SettingStep("placement_group", None),
                         engine=SettingStep("engine", "engine-handle"))
    ctx = initialize_node_sync(LLMConfig(model_id="tiny", model_source=str(tmp_path / "source")),
                               event_store=SQLiteEventStore(store), steps=steps)
    result = invoke("timeline", ctx.init_id, "--store", str(store), width=200)
    assert result.exit_code == 0, result.output
    assert len(files) == 8
    assert entries(result.output) == [
        "pre_initialization", "download", "step download",
        f"node {socket.gethostname()[:12]} (process) 8/8 files 100.4 KB/100.4 KB",
        "placement_group", "step placement_group", "engine_init", "step engine",
        "post_initialization"]
