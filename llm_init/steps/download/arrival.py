"""What an overlapped start's engine reads in the model directory while the weights arrive.

With ``overlap_weights`` the download writes, before any weight file, the list of weight
files it will bring (``.llm-init/weights.json``: path, size and version of each), fetches the
small files (config, tokenizer), and only then the weights. Each weight file gets its final
name once verified and is then recorded in ``.llm-init/files.jsonl``; a file that fails (the
store's bytes do not match its size or checksum, the source cannot be read) leaves
``.llm-init/weights.failed`` naming it. The engine's model loader
(``llm_init.steps.vllm_overlap``) waits for each file's final, recorded version in turn and
raises at once on the failure marker, so nothing is served from a partial model.

Plain files and the standard library only: the loader reads them in vLLM's processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llm_init.errors import LLMInitError

STATE_DIR = ".llm-init"  # as ``sources.STATE_DIR``; repeated so vLLM's processes import less
PLAN = "weights.json"
FAILED = "weights.failed"
JOURNAL = "files.jsonl"
FORMAT = 1


class WeightsNotArrivedError(LLMInitError):
    """A weight file an overlapped start waits for failed to download, or did not arrive in
    time; the message names the file."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One weight file the download will bring: where, how big, which version."""

    path: str
    size: int
    version: str


def write_plan(model_dir: Path, files: Sequence[PlannedFile]) -> None:
    """Record the weight files to come and clear an earlier run's failure marker; atomic."""
    state = model_dir / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    (state / FAILED).unlink(missing_ok=True)
    body = {"format": FORMAT,
            "files": [{"path": f.path, "size": f.size, "version": f.version} for f in files]}
    tmp = state / f"{PLAN}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(body), encoding="utf-8")
    os.replace(tmp, state / PLAN)


def write_failure(model_dir: Path, path: str, message: str) -> None:
    """Leave the marker that tells a waiting engine that ``path`` will not arrive; atomic."""
    state = model_dir / STATE_DIR
    tmp = state / f"{FAILED}.{os.getpid()}.tmp"
    with contextlib.suppress(OSError):  # the download's own error still reaches its caller
        tmp.write_text(json.dumps({"path": path, "message": message}), encoding="utf-8")
        os.replace(tmp, state / FAILED)


def read_plan(model_dir: Path) -> tuple[PlannedFile, ...] | None:
    """The weight files the download announced, or ``None`` when it wrote no plan."""
    try:
        body = json.loads((model_dir / STATE_DIR / PLAN).read_text(encoding="utf-8"))
        return tuple(PlannedFile(str(f["path"]), int(f["size"]), str(f["version"]))
                     for f in body["files"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsNotArrivedError(f"{model_dir / STATE_DIR / PLAN} is unreadable: {exc}",
                                     path=PLAN) from exc


def read_failure(model_dir: Path) -> tuple[str, str] | None:
    """``(file, message)`` of a failed weight file, or ``None``."""
    try:
        body = json.loads((model_dir / STATE_DIR / FAILED).read_text(encoding="utf-8"))
        return str(body["path"]), str(body["message"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return FAILED, "the download failed (its failure marker is unreadable)"


def completed_versions(model_dir: Path) -> dict[str, str]:
    """Which version of each file the download recorded as complete under its final name."""
    versions: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError), open(
            model_dir / STATE_DIR / JOURNAL, encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                entry = json.loads(line)
                versions[entry["path"]] = entry["version"]
    return versions


def wait_for_plan(model_dir: Path, *, timeout_s: float, poll_s: float = 0.1,
                  sleep: Callable[[float], None] = time.sleep) -> tuple[PlannedFile, ...]:
    """The plan, once the download has written it (a worker node may be behind)."""
    deadline = time.monotonic() + timeout_s
    while True:
        plan = read_plan(model_dir)
        if plan is not None:
            return plan
        _raise_on_failure(model_dir)
        if time.monotonic() >= deadline:
            raise WeightsNotArrivedError(
                f"{model_dir}: the download announced no weight files ({STATE_DIR}/{PLAN}) "
                f"within {timeout_s:g} s", path=PLAN)
        sleep(poll_s)


def wait_for_file(model_dir: Path, file: PlannedFile, *, timeout_s: float, poll_s: float = 0.1,
                  sleep: Callable[[float], None] = time.sleep) -> Path:
    """The final path of ``file`` once the download has verified and recorded this version of
    it; raise naming the file when the download failed or ``timeout_s`` passed first."""
    final = model_dir / file.path
    deadline = time.monotonic() + timeout_s
    while True:
        if completed_versions(model_dir).get(file.path) == file.version:
            with contextlib.suppress(FileNotFoundError):
                if final.stat().st_size == file.size:
                    return final
        _raise_on_failure(model_dir)
        if time.monotonic() >= deadline:
            raise WeightsNotArrivedError(
                f"{final}: the weight file did not arrive within {timeout_s:g} s of the "
                f"engine asking for it; nothing was loaded from a partial model",
                path=file.path)
        sleep(poll_s)


def _raise_on_failure(model_dir: Path) -> None:
    failed = read_failure(model_dir)
    if failed is not None:
        path, message = failed
        raise WeightsNotArrivedError(
            f"{model_dir / path}: the download of this weight file failed ({message}); "
            f"the engine loaded nothing from a partial model", path=path)
