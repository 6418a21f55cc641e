"""A Hugging Face Hub on loopback, and a Hub cache written by hand, for offline tests.

    with FakeHub() as hub:
        commit = hub.add("org/tiny", {"config.json": b"{}", "model.safetensors": b"..."})
        os.environ["HF_ENDPOINT"] = hub.endpoint

``FakeHub`` answers the two calls a download makes: ``GET /api/models/<repo>/revision/<rev>``
(the listing with blob ids, sizes and LFS SHA-256s) and ``GET /<repo>/resolve/<rev>/<path>``
(the bytes, with ``Range``). ``bytes_served`` counts what it sent.

``populate_hub_cache(cache, repo, files)`` lays files out as ``huggingface_hub`` caches them:
``models--org--name/{blobs,snapshots/<commit>,refs/main}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def blob_id(name: str, data: bytes) -> str:
    """The Hub's id of a file: the SHA-256 for LFS files, else the git blob SHA-1."""
    if name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return git_blob_sha1(data)


@dataclass
class _Revision:
    commit: str
    files: dict[str, bytes]


class FakeHub:
    """Serves repos added with ``add`` at ``endpoint`` (127.0.0.1, a free port)."""

    def __init__(self) -> None:
        self.revisions: dict[tuple[str, str], _Revision] = {}
        self.bytes_served = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host!s}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    def add(self, repo_id: str, files: dict[str, bytes], *,
            revisions: tuple[str, ...] = ("main",)) -> str:
        """Publish ``files`` as a new commit of ``repo_id`` under ``revisions``; return it."""
        commit = hashlib.sha1(repr((repo_id, sorted(files.items()))).encode()).hexdigest()
        for name in (*revisions, commit):
            self.revisions[(repo_id, name)] = _Revision(commit, files)
        return commit

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()

    def listing(self, repo_id: str, revision: str) -> dict[str, object] | None:
        found = self.revisions.get((repo_id, revision))
        if found is None:
            return None
        siblings = []
        for name, data in sorted(found.files.items()):
            sibling: dict[str, object] = {"rfilename": name, "size": len(data),
                                          "blobId": git_blob_sha1(data)}
            if name.endswith(LFS_SUFFIXES):
                sibling["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                  "pointerSize": 134}
            siblings.append(sibling)
        return {"id": repo_id, "modelId": repo_id, "sha": found.commit, "siblings": siblings}


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = unquote(urlsplit(self.path).path)
            if path.startswith("/api/models/") and "/revision/" in path:
                repo_id, revision = path[len("/api/models/"):].split("/revision/", 1)
                listing = hub.listing(repo_id, revision)
                if listing is None:
                    return self._send(404, b'{"error": "Revision not found"}',
                                      {"X-Error-Code": "RevisionNotFound"})
                return self._send(200, json.dumps(listing).encode(),
                                  {"Content-Type": "application/json"})
            if "/resolve/" in path:
                repo_id, rest = path.lstrip("/").split("/resolve/", 1)
                revision, name = rest.split("/", 1)
                found = hub.revisions.get((repo_id, revision))
                if found is None or name not in found.files:
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound"})
                return self._send_file(found, name)
            return self._send(404, b"")

        def _send_file(self, found: _Revision, name: str) -> None:
            data = found.files[name]
            headers = {"ETag": f'"{blob_id(name, data)}"', "X-Repo-Commit": found.commit,
                       "Accept-Ranges": "bytes"}
            start = 0
            if (spec := self.headers.get("Range")) and spec.startswith("bytes="):
                start = int(spec[6:].split("-", 1)[0] or 0)
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self._send(206 if start else 200, data[start:], headers)

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            if status in (200, 206) and "/resolve/" in self.path:
                with hub._lock:
                    hub.bytes_served += len(body)

    return Handler


def populate_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes], *,
                       commit: str = "0" * 40, revision: str = "main") -> Path:
    """Lay ``files`` out as ``huggingface_hub`` caches a snapshot; return the snapshot dir."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for name, data in files.items():
        blob = repo / "blobs" / blob_id(name, data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot
