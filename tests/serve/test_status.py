"""The live status endpoint: the replay of the events so far, served over HTTP while the
initialization runs."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from typing import Any

import pytest

from llm_init import DefaultSteps, InMemoryEventStore, LLMConfig, initialize_node
from llm_init.serve.status import StatusServer, status_document
from tests.support.steps import SettingStep


class SlowDownload:
    """Reports progress, then waits until the test has looked."""

    def __init__(self, looked: threading.Event) -> None:
        self.looked = looked

    async def run(self, ctx: Any, report: Any) -> None:
        report(node_id="n1", stage="fetching", bytes_done=512, bytes_total=2048)
        while not self.looked.is_set():
            await asyncio.sleep(0.01)
        ctx.download_result = "/models/m"


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Content-Type"] == "application/json"
        document: dict[str, Any] = json.loads(response.read())
        return document


def test_status_shows_phase_step_elapsed_and_download_progress_while_running():
    """Mid-download the endpoint answers with the running phase and step, elapsed times and
    the latest progress; after the end, the completed initialization and its phases."""
    server = StatusServer("127.0.0.1", 0)
    looked = threading.Event()
    seen: dict[str, Any] = {}

    def look() -> None:
        while True:
            document = get(server.url)
            if document.get("download"):
                seen.update(document)
                looked.set()
                return

    watcher = threading.Thread(target=look)
    watcher.start()
    steps = DefaultSteps(download=SlowDownload(looked),
                         placement_group=SettingStep("placement_group", None),
                         engine=SettingStep("engine", "engine"))
    try:
        ctx = asyncio.run(initialize_node(
            LLMConfig(model_id="m"), event_store=InMemoryEventStore(), steps=steps,
            observers=[server], labels={"replica": "r1"}))
        watcher.join()
        done = get(server.url)
    finally:
        server.close()
    assert seen["outcome"] == "running"
    assert (seen["phase"], seen["step"], seen["activity"]) == ("download", "download",
                                                               "download step")
    assert seen["download"] == {"node_id": "n1", "stage": "fetching", "bytes_done": 512,
                                "bytes_total": 2048}
    assert seen["elapsed_s"] >= seen["phase_elapsed_s"] >= 0
    assert seen["labels"] == {"replica": "r1"}
    assert done["init_id"] == ctx.init_id
    assert done["outcome"] == "completed"
    assert done["phase"] is None
    assert list(done["phases"]) == ["pre_initialization", "download", "placement_group",
                                    "engine_init", "post_initialization"]


def test_before_any_event_and_unknown_paths():
    """Nothing recorded yet reads as waiting; other paths are 404."""
    assert status_document([]) == {"outcome": "waiting"}
    server = StatusServer()
    try:
        assert get(server.url.removesuffix("status")) == {"outcome": "waiting"}
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(server.url + "/nope", timeout=5)
    finally:
        server.close()
