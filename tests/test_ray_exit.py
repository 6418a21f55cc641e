"""A process that ran a Ray driver ends with its own status, never in Ray's native teardown."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent("""
    import atexit, ctypes, pathlib, sys
    {load}
    from llm_init.ray_exit import exit_process

    # A native exit handler that aborts: it runs only if the process goes through C's exit,
    # where Ray's exporter thread can meet destroyed native state.
    libc = ctypes.CDLL(None)
    libc.on_exit(ctypes.cast(libc.abort, ctypes.c_void_p), None)
    atexit.register(pathlib.Path(sys.argv[1]).write_text, "python's exit handlers ran")
    print("done", flush=True)
    exit_process(3)
""")


def run_child(tmp_path: Path, load: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    marker = tmp_path / "marker"
    child = subprocess.run([sys.executable, "-c", CHILD.format(load=load), str(marker)],
                           capture_output=True, text=True, timeout=120,
                           cwd=Path(__file__).resolve().parent.parent)
    return child, marker


def test_a_process_with_rays_native_library_skips_the_native_teardown(tmp_path: Path) -> None:
    """With Ray's native library loaded, the process exits with the status it asked for after
    Python's exit handlers ran and its output was flushed, and no native exit handler runs."""
    child, marker = run_child(tmp_path, "import ray._raylet")
    assert (child.returncode, child.stdout) == (3, "done\n"), child.stderr[-2000:]
    assert marker.read_text() == "python's exit handlers ran"


def test_a_process_without_ray_exits_the_usual_way(tmp_path: Path) -> None:
    """Without Ray, ending the process is ``sys.exit``: the native exit handlers run too (here
    the aborting one, so the status says so)."""
    child, marker = run_child(tmp_path, "")
    assert child.returncode == -6  # SIGABRT from the native handler: C's exit ran
    assert marker.read_text() == "python's exit handlers ran"
