"""A real PostgreSQL for tests: Debian's binaries, a throwaway cluster on a loopback port.

As a pytest plugin it provides ``postgres_server`` (one per session: the server named by
``LLM_INIT_TEST_POSTGRES_URL`` if set, else one started here), ``postgres_url`` (a fresh
schema per test) and ``own_postgres`` (a server private to this session, which a test may stop
and start; a fresh schema per test).
Without binaries the tests skip, unless ``LLM_INIT_REQUIRE_POSTGRES=1`` makes that a failure.

As a script it starts one server for CI and prints the shell exports:
``eval "$(python -m tests.support.postgres start DIR)"`` ... ``python -m tests.support.postgres
stop DIR``. initdb refuses to run as root; as root, the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

URL_ENV = "LLM_INIT_TEST_POSTGRES_URL"
REQUIRE_ENV = "LLM_INIT_REQUIRE_POSTGRES"
USER = "llm_init"
# Test speed over crash safety: these clusters are thrown away.
FAST = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")


def bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with initdb, or the one on ``PATH``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """One cluster in ``root``: ``init()``, ``start()``, ``stop()``; connects as ``llm_init``
    with a password (scram), which ``url()`` leaves out: pass ``password`` or ``PGPASSWORD``."""

    def __init__(self, root: Path, port: int | None = None, *, fast: bool = True) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port or free_port()
        self.fast = fast
        self.password_file = root / "password"
        self._bin = bindir()
        if self._bin is None:
            raise RuntimeError("no PostgreSQL binaries (initdb) found")
        # initdb and postgres refuse to run as root; run them as an unprivileged user.
        self._user = None
        if os.geteuid() == 0:
            self._user = "postgres" if _user_exists("postgres") else "nobody"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def _run(self, *args: str) -> None:
        assert self._bin is not None
        proc = subprocess.run([str(self._bin / args[0]), *args[1:]], user=self._user,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")

    def init(self) -> PostgresServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self.password_file.write_text(secrets.token_hex(12) + "\n")
        if self._user is not None:
            uid = pwd.getpwnam(self._user).pw_uid
            for path in (self.root, self.password_file):
                os.chown(path, uid, -1)
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=scram-sha-256",
                  f"--pwfile={self.password_file}", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> PostgresServer:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories='' -c max_connections=200 "
                   f"{FAST if self.fast else ''}")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                  "-t", "30", "-o", options, "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        assert self._bin is not None
        return subprocess.run([str(self._bin / "pg_ctl"), "-D", str(self.data), "status"],
                              user=self._user, capture_output=True, check=False).returncode == 0

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{dbname}"


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"PostgreSQL is required ({REQUIRE_ENV}=1) but {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def running_server(fast: bool = True) -> Iterator[PostgresServer]:
    """A started server in a fresh temp dir, stopped and deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="llm-init-pg-"))
    os.chmod(root, 0o755)
    server = PostgresServer(root / "cluster", fast=fast).init().start()
    try:
        yield server
    finally:
        with contextlib.suppress(RuntimeError):
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def _private_postgres() -> Iterator[PostgresServer]:
    if bindir() is None:
        _unavailable("no PostgreSQL binaries (initdb) found; apt-get install postgresql")
    with running_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """The admin URL of the session's server (no password in it; ``PGPASSWORD`` is set):
    ``LLM_INIT_TEST_POSTGRES_URL``, or else the session's private server."""
    external = os.environ.get(URL_ENV)
    if external:
        yield external
        return
    server: PostgresServer = request.getfixturevalue("_private_postgres")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PGPASSWORD", server.password)
        yield server.url()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose ``search_path`` is a new, empty schema on the session's server (a schema
    is created in milliseconds, a database in about half a second)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    yield with_param(postgres_server, "options", f"-csearch_path={name}")
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA {name} CASCADE")


def with_param(url: str, key: str, value: str) -> str:
    """``url`` with one more query parameter."""
    return f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode({key: value})}"


@dataclass
class StoppablePostgres:
    """A test's view of the private server: a fresh schema, and ``stop()``/``start()``."""

    server: PostgresServer
    schema: str

    @property
    def password(self) -> str:
        return self.server.password

    def url(self) -> str:
        return with_param(self.server.url(), "options", f"-csearch_path={self.schema}")

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()


@pytest.fixture
def own_postgres(_private_postgres: PostgresServer,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[StoppablePostgres]:
    """The session's own server (never an external one) with a new schema; the test may stop
    and start it, and it runs again after the test."""
    server = _private_postgres
    monkeypatch.setenv("PGPASSWORD", server.password)
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    yield StoppablePostgres(server, name)
    if not server.running():
        server.start()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.support.postgres start|stop DIR", file=sys.stderr)
        return 2
    root = Path(argv[1]).resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    server = PostgresServer(root / "cluster", port=None)
    if argv[0] == "stop":
        server.stop()
        return 0
    server.init().start()
    (root / "port").write_text(str(server.port))
    print(f"export {URL_ENV}={server.url()}")
    print(f"export PGPASSWORD={server.password}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
