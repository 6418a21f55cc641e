"""vLLM's model loader for the overlapped start: each weight file taken as soon as it is complete.

Registered by llm-init's vLLM general plugin (``register_overlap_loader``, entry point group
``vllm.general_plugins``, so in every vLLM process) under the load format
``llm_init_overlap``. It is vLLM's default loader reading safetensors, except that the weight
files come from the download's announcement (``.llm-init/weights.json``, see
``llm_init.steps.download.arrival``) rather than from a listing of the directory, and each is
opened only once the download has verified it and given it its final name. The download's
failure marker, or a file that takes longer than ``model_loader_extra_config["llm_init_wait_s"]``
(default 1800 s), fails the load with an error naming the file: nothing is served from a
partial model. A directory without an announcement but with safetensors files is loaded as the
default loader would; one with neither waits for the announcement (a worker node's download
may be behind the engine).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from llm_init.overlap import DEFAULT_WAIT_S, OVERLAP_LOAD_FORMAT, WAIT_KEY
from llm_init.steps.download import arrival

_log = logging.getLogger(__name__)


def register_overlap_loader() -> None:
    """Register ``OVERLAP_LOAD_FORMAT`` with vLLM (a vLLM general plugin; idempotent)."""
    from vllm.model_executor.model_loader import _LOAD_FORMAT_TO_MODEL_LOADER, register_model_loader

    if _LOAD_FORMAT_TO_MODEL_LOADER.get(OVERLAP_LOAD_FORMAT) is overlap_loader_class():
        return
    register_model_loader(OVERLAP_LOAD_FORMAT)(overlap_loader_class())


_CLASS: list[type[Any]] = []


def overlap_loader_class() -> type[Any]:
    """The loader class, defined on first use: vLLM is imported only in vLLM's processes."""
    if not _CLASS:
        _CLASS.append(_define())
    return _CLASS[0]


def _define() -> type[Any]:
    from vllm.model_executor.model_loader.default_loader import DefaultModelLoader

    class OverlapModelLoader(DefaultModelLoader):
        """vLLM's default loader, taking each announced weight file once it is complete."""

        def __init__(self, load_config: Any) -> None:
            extra = dict(load_config.model_loader_extra_config or {})
            self.wait_s = float(extra.pop(WAIT_KEY, DEFAULT_WAIT_S))
            # The default loader's own logic, under a format it knows and its own options.
            super().__init__(dataclasses.replace(load_config, load_format="safetensors",
                                                 model_loader_extra_config=extra))
            self._only: str | None = None

        def download_model(self, model_config: Any) -> None:
            """Nothing to fetch: llm-init's download brings the files."""

        def _prepare_weights(self, model_name_or_path: str, subfolder: str | None,
                             revision: str | None, fall_back_to_pt: bool,
                             allow_patterns_overrides: list[str] | None,
                             ) -> tuple[str, list[str], bool, str]:
            if self._only is None:
                return super()._prepare_weights(
                    model_name_or_path, subfolder, revision, fall_back_to_pt,
                    allow_patterns_overrides)
            return model_name_or_path, [self._only], True, "model.safetensors.index.json"

        def _get_weights_iterator(self, source: Any) -> Generator[tuple[str, Any], None, None]:
            model_dir = Path(source.model_or_path)
            planned = arrival.read_plan(model_dir) if model_dir.is_dir() else None
            if planned is None and model_dir.is_dir() and not any(
                    model_dir.glob("*.safetensors")):
                # A worker node whose download has not announced its files yet.
                planned = arrival.wait_for_plan(model_dir, timeout_s=self.wait_s)
            if planned is None or source.subfolder is not None:
                yield from super()._get_weights_iterator(source)
                return
            shards = [f for f in planned if f.path.endswith(".safetensors")
                      and (source.allow_patterns_overrides is None
                           or any(Path(f.path).match(p)
                                  for p in source.allow_patterns_overrides))]
            shards = _indexed(model_dir, shards)
            if not shards:
                raise arrival.WeightsNotArrivedError(
                    f"{model_dir}: the download announced no safetensors weight files "
                    f"(the overlapped start loads safetensors only)", path=arrival.PLAN)
            waited = 0.0
            for shard in shards:
                started = time.perf_counter()
                path = arrival.wait_for_file(model_dir, shard, timeout_s=self.wait_s)
                waited += time.perf_counter() - started
                self._only = str(path)
                try:
                    weights = super()._get_weights_iterator(source)
                finally:
                    self._only = None
                yield from weights
            _log.info("llm-init: loaded %d weight files as they arrived, %.2f s waiting "
                      "for them", len(shards), waited)

    return OverlapModelLoader


def _indexed(model_dir: Path, shards: list[arrival.PlannedFile]) -> list[arrival.PlannedFile]:
    """The shards the safetensors index names, where there is one (as the default loader
    filters: a consolidated file beside the shards would load every weight twice)."""
    import json

    try:
        index = json.loads((model_dir / "model.safetensors.index.json").read_text("utf-8"))
        named = set(index["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return shards
    return [f for f in shards if f.path in named]
