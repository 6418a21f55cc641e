"""The download step with a local directory source: what each node mode fetches, the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_init import NodeModelDownloadable
from llm_init.steps.download import (
    RemoteFile,
    SourceNotFoundError,
    download_step,
    parse_source,
    select_files,
)
from llm_init.summary import json_safe
from tests.support.download import run_step
from tests.support.models import TOKENIZER_FILES, read_tree, weight_files, write_model

COPY = {"copy_local_source": True}  # a local source is used in place unless copying is asked


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    src = tmp_path / "src"
    return src, write_model(src, shards=2, shard_size=300_000)


def test_model_and_tokenizer_copies_every_file(tmp_path, model) -> None:
    """MODEL_AND_TOKENIZER brings weights, config and tokenizer into the cache, byte for byte."""
    src, files = model
    result, _ = run_step(download_step(cache_dir=tmp_path / "cache", **COPY), src)
    assert result.path is not None
    assert read_tree(Path(result.path)) == read_tree(src)
    assert result.bytes_fetched == sum(files.values()) == result.bytes_total


def test_tokenizer_only_copies_no_weights(tmp_path, model) -> None:
    """TOKENIZER_ONLY brings the config and tokenizer files and leaves the weights."""
    src, _ = model
    result, _ = run_step(download_step(cache_dir=tmp_path / "cache", **COPY), src,
                         local="TOKENIZER_ONLY")
    assert result.path is not None
    assert sorted(read_tree(Path(result.path))) == sorted(TOKENIZER_FILES)


def test_none_fetches_nothing(tmp_path, model) -> None:
    """NONE fetches no file and reports no local path."""
    src, _ = model
    result, _ = run_step(download_step(cache_dir=tmp_path / "cache", **COPY), src, local="NONE")
    assert (result.path, result.bytes_fetched, result.nodes[0].files) == (None, 0, ())
    assert not (tmp_path / "cache").exists()


def test_second_run_fetches_nothing(tmp_path, model) -> None:
    """A model already complete in the cache is found there: zero bytes fetched."""
    src, files = model
    step = download_step(cache_dir=tmp_path / "cache", **COPY)
    run_step(step, src)
    result, _ = run_step(step, src)
    assert (result.bytes_fetched, result.files_fetched) == (0, 0)
    assert result.bytes_total == sum(files.values())


def test_changed_source_file_is_fetched_again(tmp_path, model) -> None:
    """A source file that changed since the last run is fetched again, and only it."""
    src, _ = model
    step = download_step(cache_dir=tmp_path / "cache", **COPY)
    run_step(step, src)
    (src / "config.json").write_text('{"changed": true}')
    result, _ = run_step(step, src)
    assert result.files_fetched == 1
    assert Path(result.path or "", "config.json").read_text() == '{"changed": true}'


def test_tokenizer_then_full_model_fetches_only_the_weights(tmp_path, model) -> None:
    """A full download after a tokenizer-only one in the same cache fetches just the weights."""
    src, files = model
    step = download_step(cache_dir=tmp_path / "cache", **COPY)
    run_step(step, src, local="TOKENIZER_ONLY")
    result, _ = run_step(step, src)
    assert result.bytes_fetched == sum(files[n] for n in weight_files(files)) + files[
        "model.safetensors.index.json"]


def test_cache_dir_from_environment(tmp_path, model, monkeypatch) -> None:
    """Without ``cache_dir``, LLM_INIT_CACHE_DIR holds the model, in a directory named after it."""
    src, _ = model
    monkeypatch.setenv("LLM_INIT_CACHE_DIR", str(tmp_path / "env-cache"))
    result, _ = run_step(download_step(**COPY), src)
    expected = "local--" + "--".join(p for p in src.parts if p != "/")
    assert Path(result.path or "") == tmp_path / "env-cache" / expected


def test_in_place_source_is_not_copied(tmp_path, model) -> None:
    """With ``copy_local_source=False`` the directory itself is the model path."""
    src, _ = model
    result, _ = run_step(download_step(cache_dir=tmp_path / "cache", copy_local_source=False),
                         src)
    assert (result.path, result.bytes_fetched) == (str(src.resolve()), 0)
    assert not (tmp_path / "cache").exists()


def test_a_local_source_is_used_in_place_by_default(tmp_path, model) -> None:
    """As Ray Serve LLM does: the directory itself is the model path, nothing is copied, and
    the files are still listed and sized."""
    src, files = model
    result, _ = run_step(download_step(cache_dir=tmp_path / "cache"), src)
    assert (result.path, result.bytes_fetched, result.bytes_total) == (
        str(src.resolve()), 0, sum(files.values()))
    assert result.nodes[0].resolved_from == "in place"
    assert not (tmp_path / "cache").exists()


def test_a_missing_directory_used_in_place_is_named(tmp_path) -> None:
    """In place, a source directory that does not exist fails as it does when copied."""
    with pytest.raises(SourceNotFoundError, match=r"model directory .*does-not-exist does not"):
        run_step(download_step(cache_dir=tmp_path / "cache"), tmp_path / "does-not-exist")


def test_missing_directory_is_named(tmp_path) -> None:
    """A source directory that does not exist fails with an error naming it."""
    with pytest.raises(SourceNotFoundError, match="does-not-exist"):
        run_step(download_step(cache_dir=tmp_path / "cache", **COPY), tmp_path / "does-not-exist")


def test_progress_reports_sum_to_the_bytes_fetched(tmp_path, model) -> None:
    """The ``bytes_delta`` of all progress reports add up to the bytes fetched."""
    src, files = model
    _, reports = run_step(download_step(cache_dir=tmp_path / "cache", **COPY), src)
    assert sum(r["bytes_delta"] for r in reports) == sum(files.values())
    assert reports[-1]["stage"] == "node_completed"
    assert {"bytes_delta", "bytes_done", "bytes_total", "files_done", "files_total",
            "node_id"} <= set(reports[-1])


def test_result_is_recorded_as_json(tmp_path, model) -> None:
    """The result's JSON-safe form carries source, path, bytes and each node by id."""
    src, _ = model
    result, _ = run_step(download_step(cache_dir=tmp_path / "cache", **COPY), src)
    recorded = json_safe(result)
    assert recorded["source_kind"] == "local"
    assert recorded["nodes"][0]["node_id"] == result.nodes[0].node_id
    assert recorded["nodes"][0]["what"] == "MODEL_AND_TOKENIZER"


def test_safetensors_are_preferred_over_other_weight_formats() -> None:
    """When safetensors exist, other weight formats are left out, as vLLM would load them."""
    listed = [RemoteFile(n, 1, "v") for n in (
        "config.json", "model.safetensors", "pytorch_model.bin", "original/consolidated.pth",
        "original/tokenizer.model", ".cache/huggingface/x.json")]
    chosen = select_files(listed, NodeModelDownloadable.MODEL_AND_TOKENIZER)
    assert [f.path for f in chosen] == ["config.json", "model.safetensors",
                                        "original/tokenizer.model"]


@pytest.mark.parametrize(("text", "kind", "location"), [
    ("s3://bucket/models/llama", "s3", "s3://bucket/models/llama"),
    ("hf://org/model", "hf", "org/model"),
    ("meta-llama/Llama-3.1-8B", "hf", "meta-llama/Llama-3.1-8B"),
    ("/models/tiny", "local", "/models/tiny"),
])
def test_sources_are_told_apart(text, kind, location) -> None:
    """S3 URIs, Hub repo ids and directories are recognised by their form."""
    spec = parse_source(text)
    assert (spec.kind, spec.location) == (kind, location)
