"""The artifact key: what changes it and what does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llm_init.artifacts import (
    artifact_key,
    cpu_flags,
    open_artifact_store,
    publish,
    restore,
    weights_identity,
)
from llm_init.artifacts.key import compile_environment, weights_of_directory

VERSIONS = {"python": "3.11", "vllm": "0.32.0", "torch": "2.13.0"}
DEVICE = {"platform": "linux-x86_64", "cpu.isa": "avx,avx2"}
ENGINE = {"dtype": "bfloat16", "max_model_len": 256, "enforce_eager": False,
          "compilation_config": {"mode": 3}, "seed": 7}


def key(**changes: object) -> str:
    args: dict[str, object] = {"source": "s3://models/tiny", "revision": None, "weights": "w1",
                               "engine_kwargs": ENGINE, "versions": VERSIONS, "device": DEVICE}
    args.update(changes)
    return artifact_key(**args).digest  # type: ignore[arg-type]  # arguments of mixed types


def test_every_part_that_shapes_the_graph_changes_the_key() -> None:
    """Weights, versions, ISA flags and graph-shaping engine arguments each give a new key."""
    variants = [key(), key(weights="w2"), key(revision="abc"),
                key(versions={**VERSIONS, "vllm": "0.33.0"}),
                key(versions={**VERSIONS, "torch": "2.14.0"}),
                key(device={**DEVICE, "cpu.isa": "avx,avx2,avx512f"}),
                key(engine_kwargs={**ENGINE, "max_model_len": 512}),
                key(engine_kwargs={**ENGINE, "compilation_config": {"mode": 0}}),
                key(engine_kwargs={**ENGINE, "enforce_eager": True})]
    assert len(set(variants)) == len(variants)


def test_arguments_that_do_not_shape_the_graph_keep_the_key() -> None:
    """A seed or a served model name does not change what vLLM compiles."""
    assert key(engine_kwargs={**ENGINE, "seed": 8, "served_model_name": "x"}) == key()


def test_the_parts_name_what_went_into_the_key() -> None:
    """The parts list versions, device and engine arguments, with credentials masked."""
    parts = artifact_key(source="s3://user:pw@models/tiny", revision=None, weights="w",
                         engine_kwargs=ENGINE, versions=VERSIONS, device=DEVICE).parts
    assert parts["vllm"] == "0.32.0"
    assert parts["cpu.isa"] == "avx,avx2"
    assert parts["engine.max_model_len"] == "256"
    assert "pw" not in parts["model.source"]


def test_weights_identity_ignores_tokenizer_files() -> None:
    """Only weight files count: a changed tokenizer does not invalidate compiled graphs."""
    weights = [("model.safetensors", 10, "etag1")]
    assert weights_identity([*weights, ("tokenizer.json", 5, "a")]) == weights_identity(
        [*weights, ("tokenizer.json", 6, "b")])
    assert weights_identity(weights) != weights_identity([("model.safetensors", 10, "etag2")])


def test_the_same_model_in_two_directories_has_one_identity(tmp_path: Path) -> None:
    """The model's path is not part of its identity: two nodes' copies agree."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"weights")
        (tmp_path / name / "config.json").write_text("{}")
    assert weights_of_directory(tmp_path / "a") == weights_of_directory(tmp_path / "b")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    """The first CPU's flags line is what counts; no file gives no flags."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx avx2\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx", "avx2"}
    assert cpu_flags(tmp_path / "absent") == frozenset()


def test_a_variable_vllm_hashes_is_a_part_named_after_it_and_its_locations_are_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``VLLM_*`` variable vLLM's own ``compile_factors`` hashes, set here, becomes a part
    with vLLM's reading of it; where its cache lives (``VLLM_CACHE_ROOT``) and inductor's cache
    directory do not, and ``TORCHINDUCTOR_*`` settings do."""
    monkeypatch.setenv("VLLM_USE_AOT_COMPILE", "0")
    monkeypatch.setenv("VLLM_CACHE_ROOT", "/somewhere/else")
    monkeypatch.setenv("TORCHINDUCTOR_MAX_AUTOTUNE", "1")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/inductor")
    parts = compile_environment()
    assert parts["vllm.env.VLLM_USE_AOT_COMPILE"] == "false"
    assert parts["torch.env.TORCHINDUCTOR_MAX_AUTOTUNE"] == "1"
    assert not any("CACHE_ROOT" in name or "CACHE_DIR" in name for name in parts)


def test_without_vllm_every_vllm_variable_set_but_locations_and_logging_is_a_part() -> None:
    """The fallback (no vLLM to ask) keeps the ``VLLM_*`` variables as written, less the
    ones vLLM leaves out of its own hash."""
    parts = compile_environment({"VLLM_USE_AOT_COMPILE": "0", "VLLM_CACHE_ROOT": "/c",
                                 "VLLM_LOGGING_LEVEL": "DEBUG", "HOME": "/root"})
    assert parts == {"vllm.env.VLLM_USE_AOT_COMPILE": "0"}


def test_a_publisher_and_a_restorer_differing_in_a_hashed_variable_miss_naming_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An artifact published under one value of a variable vLLM hashes is no match for a
    node with another: a recorded miss whose message and differences name the variable, not
    a restore that vLLM would silently recompile over."""
    store = open_artifact_store(f"file://{tmp_path / 'store'}")
    args: dict[str, Any] = {"source": "s3://models/tiny", "revision": None, "weights": "w1",
                            "engine_kwargs": ENGINE, "versions": VERSIONS, "device": DEVICE}
    monkeypatch.setenv("VLLM_USE_AOT_COMPILE", "1")
    published = artifact_key(**args)
    cache = tmp_path / "cold" / "torch_compile_cache" / "abc"
    cache.mkdir(parents=True)
    (cache / "model").write_bytes(b"compiled" * 100)
    publish(store, published.digest, published.parts, tmp_path / "cold")
    monkeypatch.setenv("VLLM_USE_AOT_COMPILE", "0")
    wanted = artifact_key(**args)
    outcome = restore(store, wanted.digest, wanted.parts, tmp_path / "warm")
    assert (outcome.result, outcome.reason, outcome.nearest) == (
        "miss", "no_match", published.digest)
    assert dict(outcome.differs) == {"vllm.env.VLLM_USE_AOT_COMPILE": ("true", "false")}
    assert "vllm.env.VLLM_USE_AOT_COMPILE" in (outcome.message or "")


def test_values_vllm_writes_into_its_own_environment_keep_the_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Variables vLLM sets itself while it makes an engine (the CPU platform's inductor
    threads) are no part, so a second start in one process computes the first one's key; the
    same variables set by hand to another value are."""
    before = compile_environment()
    monkeypatch.setenv("TORCHINDUCTOR_CPP_DYNAMIC_THREADS", "1")
    monkeypatch.setenv("VLLM_DISABLE_SHARED_EXPERTS_STREAM", "1")
    assert compile_environment() == before
    monkeypatch.setenv("TORCHINDUCTOR_CPP_DYNAMIC_THREADS", "0")
    assert compile_environment()["torch.env.TORCHINDUCTOR_CPP_DYNAMIC_THREADS"] == "0"
