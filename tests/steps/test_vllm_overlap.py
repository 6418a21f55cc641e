"""The overlapped start's model loader: each weight file is loaded once the download has
verified and renamed it, and a failed, corrupt or late file fails the load naming it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_init.overlap import OVERLAP_LOAD_FORMAT, WAIT_KEY
from llm_init.steps.download import arrival
from llm_init.steps.download.fetch import JOURNAL, Journal
from llm_init.steps.download.sources import RemoteFile

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


def _shard(path: Path, seed: int) -> dict[str, Any]:
    """A real safetensors file of two small tensors; returns them."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {f"layer{seed}.weight": torch.randn(4, 8, generator=gen),
               f"layer{seed}.bias": torch.randn(8, generator=gen)}
    safetensors_torch.save_file(tensors, str(path))
    return tensors


class Store:
    """A model directory laid out as the download lays it out: weight files made elsewhere,
    announced in the plan, and moved into place (renamed, then journalled) on demand."""

    def __init__(self, model_dir: Path, staging: Path, shards: int) -> None:
        self.model_dir, self.files = model_dir, []
        self.tensors: dict[str, Any] = {}
        (model_dir / arrival.STATE_DIR).mkdir(parents=True)
        for i in range(shards):
            name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            self.tensors.update(_shard(staging / name, i))
            self.files.append(RemoteFile(name, (staging / name).stat().st_size, f"etag-{i}"))
        self.staging = staging
        arrival.write_plan(model_dir, [arrival.PlannedFile(f.path, f.size, f.version)
                                       for f in self.files])
        self.journal = Journal(model_dir / arrival.STATE_DIR / JOURNAL)

    def arrive(self, index: int) -> None:
        file = self.files[index]
        (self.staging / file.path).rename(self.model_dir / file.path)
        self.journal.record(file, "md5")


@pytest.fixture(scope="module")
def loader_class() -> type[Any]:
    from llm_init.steps.vllm_overlap import overlap_loader_class, register_overlap_loader

    register_overlap_loader()
    return overlap_loader_class()


def _weights(loader_class: type[Any], model_dir: Path, wait_s: float) -> Iterator[Any]:
    from vllm.config.load import LoadConfig
    from vllm.model_executor.model_loader.default_loader import DefaultModelLoader

    loader = loader_class(LoadConfig(load_format=OVERLAP_LOAD_FORMAT,
                                     model_loader_extra_config={WAIT_KEY: wait_s}))
    source = DefaultModelLoader.Source(str(model_dir), None)
    return iter(loader._get_weights_iterator(source))


def test_llm_inits_vllm_plugin_registers_the_overlap_load_format(loader_class) -> None:
    """The general plugin llm-init declares makes vLLM load ``llm_init_overlap`` with its loader."""
    from importlib.metadata import entry_points

    from vllm.config.load import LoadConfig
    from vllm.model_executor.model_loader import get_model_loader

    from llm_init.steps.vllm_overlap import register_overlap_loader

    plugins = {p.name: p for p in entry_points(group="vllm.general_plugins")}
    assert plugins["llm_init_overlap"].load() is register_overlap_loader
    loader = get_model_loader(LoadConfig(load_format=OVERLAP_LOAD_FORMAT))
    assert type(loader) is loader_class


def test_a_shard_that_arrives_later_is_loaded_once_it_is_in_place(loader_class,
                                                                  tmp_path) -> None:
    """The loader waits for each announced weight file and loads every tensor once it arrives."""
    store = Store(tmp_path / "model", tmp_path, shards=2)
    store.arrive(0)
    timer = threading.Timer(0.6, store.arrive, (1,))
    timer.start()
    started = time.perf_counter()
    loaded = dict(_weights(loader_class, store.model_dir, wait_s=30))
    timer.join()
    assert time.perf_counter() - started >= 0.5
    assert loaded.keys() == store.tensors.keys()
    for name, tensor in store.tensors.items():
        assert torch.equal(loaded[name], tensor)


def test_a_renamed_file_the_journal_has_not_recorded_is_not_loaded(loader_class,
                                                                    tmp_path) -> None:
    """A file under its final name whose version the journal does not record (an earlier
    version, say) is not read: the loader waits for this download's verified version."""
    store = Store(tmp_path / "model", tmp_path, shards=1)
    (store.staging / store.files[0].path).rename(store.model_dir / store.files[0].path)
    with pytest.raises(arrival.WeightsNotArrivedError, match=r"did not arrive within 0\.3 s"):
        next(_weights(loader_class, store.model_dir, wait_s=0.3))


def test_the_downloads_failure_marker_fails_the_load_naming_the_file(loader_class,
                                                                      tmp_path) -> None:
    """A weight file the download gave up on fails the load at once, naming that file."""
    store = Store(tmp_path / "model", tmp_path, shards=2)
    store.arrive(0)
    name = store.files[1].path
    threading.Timer(0.3, arrival.write_failure,
                    (store.model_dir, name, "the source says 12 bytes, got 7")).start()
    weights = _weights(loader_class, store.model_dir, wait_s=60)
    started = time.perf_counter()
    with pytest.raises(arrival.WeightsNotArrivedError) as caught:
        list(weights)
    assert time.perf_counter() - started < 5
    assert caught.value.path == name
    assert f"{store.model_dir / name}: the download of this weight file failed" in str(caught.value)
    assert "the source says 12 bytes, got 7" in str(caught.value)


def test_a_shard_past_the_deadline_fails_the_load_naming_the_file(loader_class,
                                                                   tmp_path) -> None:
    """A weight file that does not arrive within ``llm_init_wait_s`` fails the load, named."""
    store = Store(tmp_path / "model", tmp_path, shards=2)
    store.arrive(0)
    with pytest.raises(arrival.WeightsNotArrivedError,
                       match=rf"{store.files[1].path}: the weight file did not arrive "
                             r"within 0\.5 s") as caught:
        list(_weights(loader_class, store.model_dir, wait_s=0.5))
    assert caught.value.path == store.files[1].path


def test_a_directory_without_an_announcement_loads_as_vllms_default(loader_class,
                                                                     tmp_path) -> None:
    """Where the download announced nothing (everything was in place), the files present load."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    tensors = _shard(model_dir / "model.safetensors", 7)
    loaded = dict(_weights(loader_class, model_dir, wait_s=0.1))
    assert loaded.keys() == tensors.keys()


def test_a_directory_still_empty_waits_for_the_announcement(loader_class, tmp_path) -> None:
    """A node whose download has not announced its weight files yet (no plan, no weights):
    the loader waits for the announcement, then for the file."""
    staging = tmp_path / "staging"
    staging.mkdir()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    announced: list[Store] = []

    def announce_and_arrive() -> None:
        announced.append(Store(model_dir, staging, shards=1))
        announced[0].arrive(0)

    threading.Timer(0.4, announce_and_arrive).start()
    loaded = dict(_weights(loader_class, model_dir, wait_s=30))
    assert loaded.keys() == announced[0].tensors.keys()
