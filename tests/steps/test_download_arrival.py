"""The download's side of the overlapped start (``FetchOptions.weights_last``), against a real
S3 API on loopback (moto): the weight files announced first, fetched last, and a shard cut
short in the store refused, named, and left as a marker for the waiting engine."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_init.config import NodeModelDownloadable
from llm_init.steps.download import ChecksumMismatchError, NodeProgress, arrival, download_on_node
from llm_init.steps.download.fetch import JOURNAL, FetchOptions
from llm_init.steps.download.node import NodePlan
from llm_init.steps.download.sources import parse_source
from tests.support.models import write_model
from tests.support.s3 import MotoS3, running_moto_s3


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    with running_moto_s3() as server:
        yield server


def fetch(moto_s3: MotoS3, uri: str, cache: Path) -> tuple[Path, NodeProgress]:
    plan = NodePlan(source=parse_source(uri, endpoint_url=moto_s3.endpoint_url),
                    what=NodeModelDownloadable.MODEL_AND_TOKENIZER, cache_dir=str(cache),
                    fetch=FetchOptions(max_workers=4, weights_last=True))
    progress = NodeProgress()
    result = download_on_node(plan, node_id="n1", progress=progress, stop=threading.Event())
    assert result.path is not None
    return Path(result.path), progress


def test_weights_are_announced_first_and_fetched_after_every_small_file(moto_s3, tmp_path):
    """The plan names every weight file with its size; the journal records each small file
    complete before the first weight file."""
    files = write_model(tmp_path / "src", shards=3, shard_size=300_000)
    uri = moto_s3.upload_dir(tmp_path / "src", "arrival/ordered")
    model_dir, progress = fetch(moto_s3, uri, tmp_path / "cache")
    planned = arrival.read_plan(model_dir)
    assert planned is not None
    assert {(f.path, f.size) for f in planned} == {
        (n, s) for n, s in files.items() if n.endswith(".safetensors")}
    journal = [json.loads(line)["path"]
               for line in (model_dir / arrival.STATE_DIR / JOURNAL).read_text().splitlines()]
    first_weight = min(i for i, p in enumerate(journal) if p.endswith(".safetensors"))
    assert all(not p.endswith(".safetensors") for p in journal[:first_weight])
    assert len(journal[:first_weight]) == len(files) - 3
    assert progress.arriving_in == str(model_dir)
    assert arrival.read_failure(model_dir) is None


def test_a_shard_cut_short_in_the_store_is_refused_and_marked_for_the_engine(moto_s3, tmp_path):
    """A safetensors shard whose bytes end before its header says (the store's own checksum
    agreeing with the cut bytes) fails the download naming it, and the marker names it."""
    write_model(tmp_path / "src", shards=2, shard_size=300_000)
    shard = tmp_path / "src" / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:200_000])
    uri = moto_s3.upload_dir(tmp_path / "src", "arrival/cut")
    with pytest.raises(ChecksumMismatchError, match=r"model-00002-of-00002\.safetensors") as e:
        fetch(moto_s3, uri, tmp_path / "cache")
    assert "truncated" in str(e.value)
    model_dir = next((tmp_path / "cache").iterdir())
    failed = arrival.read_failure(model_dir)
    assert failed is not None
    assert failed[0] == "model-00002-of-00002.safetensors"
    assert not (model_dir / "model-00002-of-00002.safetensors").exists()
