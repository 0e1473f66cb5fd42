"""A throw-away PostgreSQL server for the DuckLake catalog tests (session-scoped, stopped at the end).

Finds Debian's binaries (`initdb`, `pg_ctl` on PATH, e.g. /usr/local/bin, else the newest
/usr/lib/postgresql/<ver>/bin; `make postgres` installs the `postgresql` package), `initdb`s a
cluster in a fresh temp folder, starts it on a free loopback port (unix socket inside the cluster
folder, fsync off) and stops it (`pg_ctl stop -m fast`) when the session ends. PostgreSQL refuses to
run as root: under root (CI) the cluster belongs to the `postgres` user that Debian's package
creates (else a system user `mmlake-pg` is created) and every command runs through `runuser`.
Each test gets its own database (`database()`), so catalogs never leak between tests.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def find_bin() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and (Path(found).parent / "pg_ctl").exists():
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _service_user() -> str | None:
    """None when not root; else a user PostgreSQL accepts to run as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "mmlake-pg"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "mmlake-pg"],
                   check=True, capture_output=True)
    return "mmlake-pg"


class PostgresServer:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.user = _service_user()
        self.root = Path(tempfile.mkdtemp(prefix="mmlake-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.started = False
        if self.user:
            shutil.chown(self.root, self.user)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout, cwd=self.root)

    def start(self) -> "PostgresServer":
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "mmlake", "-E", "UTF8", "--no-sync",
                  "--no-instructions")
        opts = (f"-h 127.0.0.1 -p {self.port} -k {self.root} -F -c max_connections=300 "
                "-c shared_buffers=32MB -c synchronous_commit=off")
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "server.log"), "-w",
                  "-t", "60", "start")
        self.started = True
        return self

    def stop(self) -> None:
        if self.started:
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
            finally:
                self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=mmlake dbname={dbname}"

    def database(self) -> str:
        """A new empty database; returns its conninfo."""
        import psycopg

        name = f"lake_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.conninfo(), autocommit=True) as con:
            con.execute(f'create database "{name}"')
        return self.conninfo(name)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the session (skipped, saying why, only when no binaries are found)."""
    bindir = find_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb on PATH or under /usr/lib/postgresql/*/bin): "
                    "`make postgres` installs Debian's postgresql package")
    server = PostgresServer(bindir)
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        server.stop()
        raise RuntimeError(f"could not start PostgreSQL: {exc.stderr or exc.stdout}") from exc
    try:
        yield server
    finally:
        from mmlake.catalog import drop_instances

        drop_instances()
        server.stop()
