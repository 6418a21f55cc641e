"""The key of a warm-start artifact: what decides whether vLLM can reuse another node's cache.

The key of a warm-start artifact: everything that decides whether vLLM can reuse what it
cached on another node. Its parts are plain strings, shown in events so a miss can be explained;
the key is a digest of them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from llm_init.telemetry.redaction import redact_identifier, redact_text

# Engine arguments that change what vLLM compiles or caches (its graph, shapes, kernels).
GRAPH_ARGUMENTS = (
    "dtype", "max_model_len", "max_num_batched_tokens", "max_num_seqs", "tensor_parallel_size",
    "pipeline_parallel_size", "data_parallel_size", "quantization", "kv_cache_dtype",
    "block_size", "compilation_config", "enforce_eager", "enable_prefix_caching",
    "enable_chunked_prefill", "cuda_graph_sizes", "hf_overrides", "trust_remote_code",
    "speculative_config", "enable_lora", "max_lora_rank",
)
# CPU feature flags the compiled C++ kernels may use: a node without one cannot run them.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
             "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile",
             "asimd", "sve", "bf16")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
KEY_LENGTH = 24
# The parts that say which model an artifact is for, and those that say which software and
# device made it: an artifact of the same model that differs only in the latter is a version
# mismatch (an upgrade, another ISA), not a different configuration.
MODEL_PARTS = ("model.source", "model.revision", "model.weights")
RUNTIME_PARTS = ("python", "vllm", "torch", "platform", "cpu.isa", "gpu.name",
                 "gpu.capability", "gpu.count")
# Parts for the environment vLLM's compile cache depends on: ``vllm.env.<NAME>`` for each
# variable vLLM hashes into its cache directory (``vllm.envs.compile_factors``) that is set
# here, ``torch.env.<NAME>`` for inductor's settings from the environment.
VLLM_ENV_PREFIX = "vllm.env."
TORCH_ENV_PREFIX = "torch.env."
# Without vLLM importable: every ``VLLM_*`` variable set here but these, which vLLM 0.32's
# ``compile_factors`` leaves out too (where things live, logging, ports, credentials).
FALLBACK_IGNORED = frozenset({
    "VLLM_CACHE_ROOT", "VLLM_CONFIG_ROOT", "VLLM_XLA_CACHE_PATH", "VLLM_ASSETS_CACHE",
    "VLLM_RPC_BASE_PATH", "VLLM_PORT", "VLLM_HOST_IP", "VLLM_DP_MASTER_IP",
    "VLLM_DP_MASTER_PORT", "VLLM_API_KEY", "VLLM_LOGGING_LEVEL", "VLLM_LOGGING_PREFIX",
    "VLLM_LOGGING_STREAM", "VLLM_LOGGING_CONFIG_PATH", "VLLM_LOGGING_COLOR",
    "VLLM_LOG_STATS_INTERVAL", "VLLM_NO_USAGE_STATS", "VLLM_DO_NOT_TRACK",
    "VLLM_USAGE_STATS_SERVER", "VLLM_CPU_KVCACHE_SPACE", "VLLM_WORKER_MULTIPROC_METHOD",
    "VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_FORCE_AOT_LOAD", "VLLM_MODEL_REDIRECT_PATH",
})
# Where inductor keeps its cache (vLLM sets it to a directory inside its own): not a setting.
TORCH_ENV_IGNORED = frozenset({"TORCHINDUCTOR_CACHE_DIR"})
# Values vLLM 0.32 writes into its own process's environment (on import, or while it makes an
# engine's configuration for the platform): the same on every node of the platform, which is a
# part already. Left out, or a second start in one process would not find the first's key.
VLLM_SETS_ITSELF = {
    "TORCHINDUCTOR_COMPILE_THREADS": "1", "TORCHINDUCTOR_CPP_DYNAMIC_THREADS": "1",
    "VLLM_DISABLE_SHARED_EXPERTS_STREAM": "1", "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
    "VLLM_USE_RAY_COMPILED_DAG_CHANNEL_TYPE": "shm", "VLLM_SSM_CONV_STATE_LAYOUT": "SD",
    "VLLM_USE_TRITON_AWQ": "1",
}

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ArtifactKey:
    """``digest`` names the artifact; ``parts`` say what went into it."""

    digest: str
    parts: Mapping[str, str]


def make_key(parts: Mapping[str, str]) -> ArtifactKey:
    canonical = json.dumps(dict(sorted(parts.items())), separators=(",", ":"))
    return ArtifactKey(hashlib.sha256(canonical.encode()).hexdigest()[:KEY_LENGTH], dict(parts))


def model_digest(parts: Mapping[str, str]) -> str:
    """A digest of the model parts alone: artifacts of one model share it, whatever engine
    arguments, software or device made them."""
    model = {name: parts.get(name, "") for name in MODEL_PARTS}
    return hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:KEY_LENGTH]


def artifact_key(*, source: str, revision: str | None, weights: str,
                 engine_kwargs: Mapping[str, Any], versions: Mapping[str, str] | None = None,
                 device: Mapping[str, str] | None = None,
                 environment: Mapping[str, str] | None = None) -> ArtifactKey:
    """The key from the model's identity, the engine arguments that shape the graph, the
    software versions, the device and the compile-relevant environment (this node's unless
    given; see ``compile_environment``)."""
    parts = {"model.source": redact_identifier(source), "model.revision": revision or "",
             "model.weights": weights}
    parts.update(versions if versions is not None else software_versions())
    parts.update(device if device is not None else device_identity())
    parts.update(environment if environment is not None else compile_environment())
    for name in GRAPH_ARGUMENTS:
        if name in engine_kwargs:
            parts[f"engine.{name}"] = _canonical(engine_kwargs[name])
    return make_key(parts)


def _canonical(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


def weights_identity(files: Iterable[tuple[str, int, str | None]]) -> str:
    """A digest of the model's weight files: ``(path, size, checksum or ETag)`` each; files
    whose suffix is not a weight format are left out (tokenizer files don't change a graph)."""
    entries = sorted((p, s, c or "") for p, s, c in files if p.endswith(WEIGHT_SUFFIXES))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:KEY_LENGTH]


def weights_of_directory(path: str | Path, manifest_files: Mapping[str, str | None]
                         | None = None) -> str:
    """``weights_identity`` of a model directory: checksums from the download's manifest
    where it has them, else the SHA-256 of the file itself, and the model's ``config.json``."""
    root = Path(path)
    manifest_files = manifest_files or {}
    entries: list[tuple[str, int, str | None]] = []
    for file in sorted(root.rglob("*")):
        name = file.relative_to(root).as_posix()
        if name.startswith(".") or "/." in name or not file.is_file():
            continue
        if name.endswith(WEIGHT_SUFFIXES) or name == "config.json":
            checksum = manifest_files.get(name) or _sha256(file)
            entries.append((name, file.stat().st_size, checksum))
    return weights_of_listing(entries)


def weights_of_listing(files: Iterable[tuple[str, int, str | None]]) -> str:
    """``weights_identity`` of a model's files as listed (``(path, size, checksum or ETag)``,
    paths relative to the model's root): its weight files and its ``config.json``, as
    ``weights_of_directory`` counts them. A bucket's listing, read without fetching an object,
    gives the identity its downloaded copy has."""
    return weights_identity((p if p != "config.json" else "config.json.bin", s, c)
                            for p, s, c in files)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def compile_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Key parts for the environment that vLLM's compile cache depends on, so that an
    artifact made under another setting is a miss that names it, not a silent recompile.

    The variables are vLLM's own choice: those its ``vllm.envs.compile_factors()`` hashes
    into the ``torch_compile_cache`` directory name, each as vLLM reads it
    (``vllm.env.VLLM_USE_AOT_COMPILE`` = ``false``); only those set in the environment, so a
    default stays out of the key (a default changes with vLLM's version, which is a part
    already). Without vLLM importable, or for a given ``environ`` (vLLM reads only this
    process's environment): every ``VLLM_*`` variable set but those in ``FALLBACK_IGNORED``,
    as written. And ``TORCHINDUCTOR_*`` variables, which inductor reads
    into the configuration vLLM hashes too. A variable holding the value vLLM itself writes
    into its process's environment (``VLLM_SETS_ITSELF``) is left out. Values are masked as
    URLs in events are."""
    env = {name: value for name, value in (os.environ if environ is None else environ).items()
           if VLLM_SETS_ITSELF.get(name) != value}
    factors = _vllm_compile_factors() if environ is None else None
    if factors is not None:
        chosen = {name: _canonical(value) for name, value in factors.items() if name in env}
    else:
        chosen = {name: value for name, value in env.items()
                  if name.startswith("VLLM_") and name not in FALLBACK_IGNORED}
    parts = {f"{VLLM_ENV_PREFIX}{name}": redact_text(value) for name, value in chosen.items()}
    parts.update({f"{TORCH_ENV_PREFIX}{name}": redact_text(value)
                  for name, value in env.items()
                  if name.startswith("TORCHINDUCTOR_") and name not in TORCH_ENV_IGNORED})
    return dict(sorted(parts.items()))


def _vllm_compile_factors() -> dict[str, Any] | None:
    """vLLM's ``compile_factors()`` (name to the value it hashes), ``None`` without vLLM."""
    try:
        import vllm.envs as vllm_envs

        factors: dict[str, Any] = vllm_envs.compile_factors()
    except Exception as exc:  # no vLLM here, or another one without the function
        _log.debug("llm-init: the key falls back to VLLM_* variables: %r", exc)
        return None
    return factors


def software_versions() -> dict[str, str]:
    """Python, vLLM and torch versions on this node."""
    return {"python": platform.python_version(),
            "vllm": _version("vllm", "vllm-cpu"), "torch": _version("torch")}


def _version(*distributions: str) -> str:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "absent"


def device_identity() -> dict[str, str]:
    """The platform, the CPU's ISA flags that compiled kernels may use, and, when torch is
    already imported and sees a GPU, its name and compute capability."""
    parts = {"platform": f"{sys.platform}-{platform.machine()}",
             "cpu.isa": ",".join(f for f in ISA_FLAGS if f in cpu_flags())}
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                major, minor = torch.cuda.get_device_capability(0)
                parts["gpu.name"] = str(torch.cuda.get_device_name(0))
                parts["gpu.capability"] = f"{major}.{minor}"
                parts["gpu.count"] = str(torch.cuda.device_count())
        except Exception:  # a broken driver is the engine's problem, not the key's
            parts["gpu.name"] = "unknown"
    return parts


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The flags of the first CPU in ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on
    ARM); empty where there is no such file."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()
