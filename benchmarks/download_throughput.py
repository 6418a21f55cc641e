"""Download throughput of the S3 download step against a plain file copy of the same bytes.

Generates a model of several safetensors shards, serves it from moto's S3 server on loopback
(in a process of its own, as a real store would be), downloads it with ``DownloadStep`` into a
fresh cache directory, and copies the same files with ``shutil.copyfile`` (the bound: the disk
and memory path without HTTP). A plain boto3 read of every object (bytes discarded, or written)
shows what the server and HTTP client alone allow; the step copying the same files from a
directory source shows its own cost without HTTP. Prints the median of ``--runs`` interleaved
runs of each, and this process's CPU time per GiB (the server's is not counted).

    python benchmarks/download_throughput.py [--size-mb 384] [--shards 4] [--runs 3]
        [--workers 8] [--chunk-mb 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm_init import LLMConfig, NodeInitializationContext  # noqa: E402
from llm_init.steps.download import DownloadStep  # noqa: E402
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
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (this process, all threads) of ``fn()``."""
    started, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - started, cpu_seconds() - cpu


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


def read_all(client: Any, uri: str, workers: int, chunk: int, dest: Path | None = None) -> None:
    """GET every object under ``uri`` in parallel; write the bytes into ``dest``, or discard
    them. No verification, no resume, no progress: the work of the step without the step."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    names = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]

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
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--chunk-mb", type=float, default=1)
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
        chunk = int(args.chunk_mb * MIB)

        step = {"max_workers": args.workers, "chunk_size": chunk}
        client = s3_client(endpoint)  # made once, as the step makes its client once
        download(uri, endpoint, work / "warm-up", **step)  # the step's client, made once
        cases: dict[str, Callable[[Path], None]] = {
            "file copy (the bound)": lambda d: copy_tree(src, d, fsync=False),
            "file copy + fsync": lambda d: copy_tree(src, d, fsync=True),
            "boto3 GET, bytes discarded": lambda d: read_all(client, uri, args.workers, chunk),
            "boto3 GET, bytes written": lambda d: read_all(client, uri, args.workers, chunk, d),
            "step (default: CRC32, fsync)": lambda d: download(uri, endpoint, d, **step),
            "step (CRC32, no fsync)": lambda d: download(uri, endpoint, d, **step, fsync=False),
            "step (sizes only, no fsync)": lambda d: download(uri, endpoint, d, **step,
                                                              fsync=False, checksums=False),
            "step, directory source, no fsync": lambda d: download(str(src), endpoint, d,
                                                                   **step, fsync=False),
        }
        rows: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for run in range(args.runs):
            for index, (name, case) in enumerate(cases.items()):
                dest = work / f"out-{run}-{index}"
                rows[name].append(timed(lambda c=case, d=dest: c(d)))
                shutil.rmtree(dest, ignore_errors=True)
        gib = total / 2**30

        def rate(name: str) -> float:
            return total / statistics.median(wall for wall, _ in rows[name])

        bound = rate("file copy (the bound)")
        print(f"\n{total / MIB:.0f} MiB in {len(files)} files ({args.shards} shards), median of "
              f"{args.runs} runs, workers={args.workers}, chunk={args.chunk_mb} MiB, "
              f"{os.cpu_count()} CPUs\n")
        print(f"| {'method':<32} | {'MB/s':>6} | {'of bound':>8} | {'CPU s/GiB':>9} |")
        print(f"|{'-' * 34}|{'-' * 8}|{'-' * 10}|{'-' * 11}|")
        for name in cases:
            cpu = statistics.median(c for _, c in rows[name]) / gib
            print(f"| {name:<32} | {rate(name) / 1e6:>6.0f} | {rate(name) / bound:>8.2f} | "
                  f"{cpu:>9.2f} |")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
