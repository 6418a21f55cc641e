"""The weights' transfer inside the engine, recorded as ``WeightsLoaded`` events and spans.

The files vLLM loads, their sizes, and each worker's time from its log lines, as
``WeightsLoaded`` events and ``weight_loading`` spans.

Which files vLLM loads follows its own loaders: the default loader takes a local directory's
top-level ``*.safetensors`` (narrowed to the index's ``weight_map`` when there is an index),
else its ``*.bin``, else its ``*.pt``; the RunAI Model Streamer takes every top-level
``*.safetensors`` of the directory or bucket prefix. Sizes come from the files, or from a
listing of the bucket (no object is read). A model vLLM fetches from the Hub itself, or one
loaded with another format (``tensorizer``...), is not sized (``bytes`` 0).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llm_init.events import WeightsLoaded
from llm_init.overlap import OVERLAP_LOAD_FORMAT
from llm_init.steps.base import ProgressReporter
from llm_init.steps.vllm_log_parser import WeightLoad
from llm_init.telemetry import names, spans

if TYPE_CHECKING:
    from llm_init.context import NodeInitializationContext

_log = logging.getLogger(__name__)
_SAFETENSORS_INDEX = "model.safetensors.index.json"


@dataclass(frozen=True, slots=True)
class WeightFiles:
    """The weight files of a model as vLLM will load them: name to size in bytes."""

    location: str
    sizes: dict[str, int]

    @property
    def bytes(self) -> int:
        return sum(self.sizes.values())


def weight_files(location: str, load_format: str = "auto") -> WeightFiles | None:
    """The files vLLM loads from ``location`` (a directory or ``s3://bucket/prefix``) with
    ``load_format``; ``None`` when they cannot be known here (a Hub id, an unknown format)."""
    if location.startswith("s3://"):
        return _bucket_safetensors(location)
    if not os.path.isdir(location):
        return None
    if load_format.startswith("runai_streamer") or load_format == "safetensors":
        names_ = [n for n in _listdir(location) if n.endswith(".safetensors")]
    elif load_format in ("auto", "pt"):
        names_ = _default_loader_files(location, load_format)
    elif load_format == OVERLAP_LOAD_FORMAT:  # vLLM's default loader, waiting for each file
        names_ = _default_loader_files(location, "auto")
    else:
        return None
    return WeightFiles(location, {n: os.path.getsize(os.path.join(location, n))
                                  for n in sorted(names_)})


def _listdir(path: str) -> list[str]:
    return [n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n))]


def _default_loader_files(root: str, load_format: str) -> list[str]:
    """vLLM's ``DefaultModelLoader._prepare_weights`` for a local directory."""
    files = _listdir(root)
    patterns = (".pt",) if load_format == "pt" else (".safetensors", ".bin", ".pt")
    for suffix in patterns:
        found = [n for n in files if n.endswith(suffix)]
        if not found:
            continue
        if suffix == ".safetensors":
            return _in_index(root, found)
        # vLLM drops the training-only files it also matches.
        return [n for n in found if n not in ("training_args.bin", "optimizer.bin",
                                              "optimizer.pt", "scheduler.pt", "scaler.pt")]
    return []


def _in_index(root: str, found: list[str]) -> list[str]:
    """Only the files named in the index's ``weight_map``, when there is an index (a
    consolidated file beside the shards is not loaded)."""
    index = os.path.join(root, _SAFETENSORS_INDEX)
    if not os.path.isfile(index):
        return found
    try:
        with open(index, encoding="utf-8") as f:
            mapped = set(json.load(f)["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return found  # vLLM would fail on it itself; the sizes of what is there stand
    return [n for n in found if n in mapped]


def _bucket_safetensors(uri: str) -> WeightFiles:
    from llm_init.steps.download.node import open_source
    from llm_init.steps.download.sources import parse_source

    listing = open_source(parse_source(uri)).listing()
    return WeightFiles(uri, {f.path: f.size for f in listing.files
                             if "/" not in f.path and f.path.endswith(".safetensors")})


def loaded_from(vllm_config: Any) -> tuple[str, str]:
    """Where vLLM loads the weights from and with which load format. With a streaming format
    vLLM keeps the bucket URI in ``model_weights`` and points ``model`` at a local copy of the
    small files."""
    model_config = vllm_config.model_config
    location = str(getattr(model_config, "model_weights", "") or model_config.model)
    load_format = str(getattr(vllm_config.load_config, "load_format", "auto")).lower()
    return location, load_format


def record_weight_loading(ctx: NodeInitializationContext, report: ProgressReporter,
                          loads: Sequence[WeightLoad], vllm_config: Any) -> None:
    """Record each worker's weight transfer (``WeightsLoaded``, and a ``weight_loading`` span
    under the current one): the sizes of the files vLLM loaded with the time its log gave.
    Nothing when no worker's log told of one. An observer: a failure to size the files is
    logged, and the record then has the streamer's own (rounded) size, else ``bytes`` 0."""
    from llm_init.steps.download.fanout import this_node_id

    if not loads:
        return
    location, load_format = loaded_from(vllm_config)
    try:
        files = weight_files(location, load_format)
    except Exception as exc:
        _log.warning("llm-init could not size the weight files of %s: %r", location, exc)
        files = None
    node = this_node_id()
    tracer = spans.current_tracer()
    for load in loads:
        # Unsized files (a Hub id, an unreadable bucket): the streamer's own rounded figure.
        size = files.bytes if files is not None else (load.reported_bytes or 0)
        rate = size / load.seconds if load.seconds > 0 and size else None
        fields: dict[str, Any] = dict(
            bytes=size, files=len(files.sizes) if files is not None else 0,
            seconds=load.seconds, bytes_per_s=round(rate, 1) if rate is not None else None,
            load_format=load_format, source=load.source, worker=load.process, node=node,
            ended_at=load.ended_at)
        span = tracer.start_span(names.SPAN_WEIGHT_LOADING,
                                 start_time=int((load.ended_at - load.seconds) * 1e9))
        for key, value in ((names.ATTR_WEIGHT_BYTES, size),
                           (names.ATTR_WEIGHT_FILES, fields["files"]),
                           (names.ATTR_WEIGHT_SECONDS, load.seconds),
                           (names.ATTR_WEIGHT_BYTES_PER_S, fields["bytes_per_s"]),
                           (names.ATTR_WEIGHT_LOAD_FORMAT, load_format),
                           (names.ATTR_WEIGHT_WORKER, load.process),
                           (names.ATTR_NODE_ID, node)):
            if value is not None:
                span.set_attribute(key, value)
        span.end(end_time=int(load.ended_at * 1e9))
        record = getattr(report, "record", None)
        if record is not None:
            record(WeightsLoaded, **fields)
        else:  # a reporter without typed events: the transfer still reaches the log
            report(weights_loaded=fields)
