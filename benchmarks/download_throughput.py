"""Download throughput of the S3 download step against a plain file copy of the same bytes.

Generates a model of several safetensors shards and small JSON files, serves it from moto's S3
server on loopback (in a process of its own, as a real store would be), downloads it with
``DownloadStep`` into a fresh cache directory, and copies the same files with
``shutil.copyfile`` (the bound: the disk and memory path without HTTP; with fsync, the bound of
a durable download). Plain GETs from the same server show what the server and an HTTP client
alone allow: curl (presigned URLs, one file after another), boto3 in one stream, and boto3 with
the step's parallelism. The step runs at its defaults, once more with zlib's CRC32 where ISA-L's
is installed (the step before it used ISA-L), and in variants. Prints the median of ``--runs``
interleaved runs of each, and the CPU time per GiB of this process (curl included) and of the
server.

    python benchmarks/download_throughput.py [--size-mb 384] [--shards 4] [--runs 5]
        [--workers N] [--chunk-mb M]        (the step's own defaults unless given)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm_init import LLMConfig, NodeInitializationContext  # noqa: E402
from llm_init.steps.download import DownloadStep, FetchOptions, checksums  # noqa: E402
from tests.support.models import write_model  # noqa: E402
from tests.support.s3 import ENV, MIB, S3Store  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(port: int) -> subprocess.Popen[bytes]:
    """moto's S3 server in its own process, so that it does not share this one's GIL."""
    code = ("import time, logging; from moto.server import ThreadedMotoServer; "
            "logging.getLogger('werkzeug').setLevel(logging.WARNING); "
            f"ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False).start(); "
            "time.sleep(1e9)")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **ENV})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def cpu_seconds() -> float:
    """CPU seconds of this process and of the children it has waited for (curl)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds of another process, from /proc (0 where there is none)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(fn: Callable[[], None], server_pid: int) -> tuple[float, float, float]:
    """Wall-clock seconds, this process's CPU seconds and the server's, of ``fn()``."""
    started, cpu, server = time.perf_counter(), cpu_seconds(), process_cpu_seconds(server_pid)
    fn()
    return (time.perf_counter() - started, cpu_seconds() - cpu,
            process_cpu_seconds(server_pid) - server)


def copy_tree(src: Path, dst: Path, fsync: bool) -> None:
    dst.mkdir(parents=True)
    for path in src.iterdir():
        target = dst / path.name
        shutil.copyfile(path, target)
        if fsync:
            fd = os.open(target, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)


def s3_client(endpoint_url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint_url,
                        config=Config(max_pool_connections=32, s3={"addressing_style": "path"}))


def object_names(client: Any, uri: str) -> tuple[str, str, list[str]]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    names = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    return bucket, prefix, names


def read_all(client: Any, uri: str, workers: int, chunk: int, dest: Path | None = None) -> None:
    """GET every object under ``uri``, ``workers`` at a time; write the bytes into ``dest``, or
    discard them. No verification, no resume, no progress: the work of the step without it."""
    bucket, prefix, names = object_names(client, uri)

    def get(name: str) -> None:
        body = client.get_object(Bucket=bucket, Key=name)["Body"]
        if dest is None:
            while body.read(chunk):
                pass
            return
        target = dest / name.removeprefix(prefix).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb", buffering=0) as out:
            while data := body.read(chunk):
                out.write(data)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(get, names))


def curl_all(client: Any, uri: str, dest: Path) -> None:
    """One curl per object, one after another, from presigned URLs: a plain HTTP GET into a
    file, without Python on the client side."""
    bucket, prefix, names = object_names(client, uri)
    dest.mkdir(parents=True)
    for name in names:
        url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": name})
        target = dest / name.removeprefix(prefix).lstrip("/")
        subprocess.run(["curl", "-sSf", "-o", str(target), url], check=True)


@contextlib.contextmanager
def zlib_crc32() -> Iterator[None]:
    """The step as it was before ISA-L: CRC32 by zlib."""
    fast, checksums.crc32 = checksums.crc32, zlib.crc32
    try:
        yield
    finally:
        checksums.crc32 = fast


def download(uri: str, endpoint: str, cache: Path, **options: Any) -> None:
    step = DownloadStep(endpoint_url=endpoint, cache_dir=cache, **options)
    ctx = NodeInitializationContext.for_config("bench", LLMConfig(model_id="bench",
                                                                  model_source=uri))
    asyncio.run(step.run(ctx, lambda **details: None))
    assert ctx.download_result.bytes_fetched == ctx.download_result.bytes_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=384, help="weights, all shards together")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, help="the step's max_workers (default: its own)")
    parser.add_argument("--chunk-mb", type=float, help="the step's chunk_size (default: its own)")
    args = parser.parse_args()

    os.environ.update(ENV)
    work = Path(tempfile.mkdtemp(prefix="llm-init-bench-"))
    port = free_port()
    server = start_server(port)
    try:
        src = work / "model"
        shard = args.size_mb * MIB // args.shards
        files = write_model(src, shards=args.shards, shard_size=shard)
        total = sum(files.values())
        endpoint = f"http://127.0.0.1:{port}"
        uri = S3Store(endpoint).upload_dir(src, "bench/model")

        step: dict[str, Any] = {}
        if args.workers is not None:
            step["max_workers"] = args.workers
        if args.chunk_mb is not None:
            step["chunk_size"] = int(args.chunk_mb * MIB)
        defaults = FetchOptions(**step)
        workers, chunk = defaults.max_workers, defaults.chunk_size
        fast_crc = checksums.crc32 is not zlib.crc32
        client = s3_client(endpoint)  # made once, as the step makes its client once
        download(uri, endpoint, work / "warm-up", **step)  # the step's client, made once

        def step_with_zlib(d: Path) -> None:
            with zlib_crc32():
                download(uri, endpoint, d, **step)

        cases: dict[str, Callable[[Path], None]] = {
            "file copy (the bound)": lambda d: copy_tree(src, d, fsync=False),
            "file copy + fsync": lambda d: copy_tree(src, d, fsync=True),
        }
        if shutil.which("curl"):
            cases["curl GET, one stream, written"] = lambda d: curl_all(client, uri, d)
        cases.update({
            "boto3 GET, one stream, written": lambda d: read_all(client, uri, 1, chunk, d),
            f"boto3 GET, {workers} streams, discarded": lambda d: read_all(client, uri, workers,
                                                                           chunk),
            f"boto3 GET, {workers} streams, written": lambda d: read_all(client, uri, workers,
                                                                         chunk, d),
            "step, defaults (CRC32, fsync)": lambda d: download(uri, endpoint, d, **step),
        })
        if fast_crc:
            cases["step, defaults, zlib CRC32 (before)"] = step_with_zlib
        cases.update({
            "step, CRC32, no fsync": lambda d: download(uri, endpoint, d, **step, fsync=False),
            "step, sizes only, no fsync": lambda d: download(uri, endpoint, d, **step,
                                                             fsync=False, checksums=False),
            "step, directory source, no fsync": lambda d: download(str(src), endpoint, d,
                                                                   **step, fsync=False),
        })
        rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cases}
        for run in range(args.runs):
            for index, (name, case) in enumerate(cases.items()):
                dest = work / f"out-{run}-{index}"
                rows[name].append(timed(functools.partial(case, dest), server.pid))
                shutil.rmtree(dest, ignore_errors=True)
        gib = total / 2**30

        def rate(name: str) -> float:
            return total / statistics.median(wall for wall, _, _ in rows[name])

        bound, durable = rate("file copy (the bound)"), rate("file copy + fsync")
        print(f"\n{total / MIB:.0f} MiB in {len(files)} files ({args.shards} shards), median of "
              f"{args.runs} runs, step: max_workers={workers}, chunk_size={chunk / MIB:g} MiB, "
              f"CRC32 by {'ISA-L' if fast_crc else 'zlib'}; {os.cpu_count()} CPUs\n")
        print(f"| {'method':<38} | {'MB/s':>6} | {'of copy':>7} | {'of copy+fsync':>13} "
              f"| {'CPU s/GiB':>9} | {'server CPU s/GiB':>16} |")
        print(f"|{'-' * 40}|{'-' * 8}|{'-' * 9}|{'-' * 15}|{'-' * 11}|{'-' * 18}|")
        for name in cases:
            cpu = statistics.median(c for _, c, _ in rows[name]) / gib
            served = statistics.median(s for _, _, s in rows[name]) / gib
            print(f"| {name:<38} | {rate(name) / 1e6:>6.0f} | {rate(name) / bound:>7.2f} | "
                  f"{rate(name) / durable:>13.2f} | {cpu:>9.2f} | {served:>16.2f} |")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
