"""The artifact key: what changes it and what does not."""

from __future__ import annotations

from pathlib import Path

from llm_init.artifacts import artifact_key, cpu_flags, weights_identity
from llm_init.artifacts.key import weights_of_directory

VERSIONS = {"python": "3.11", "vllm": "0.32.0", "torch": "2.13.0"}
DEVICE = {"platform": "linux-x86_64", "cpu.isa": "avx,avx2"}
ENGINE = {"dtype": "bfloat16", "max_model_len": 256, "enforce_eager": False,
          "compilation_config": {"mode": 3}, "seed": 7}


def key(**changes: object) -> str:
    args: dict[str, object] = {"source": "s3://models/tiny", "revision": None, "weights": "w1",
                               "engine_kwargs": ENGINE, "versions": VERSIONS, "device": DEVICE}
    args.update(changes)
    return artifact_key(**args).digest  # type: ignore[arg-type]


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
