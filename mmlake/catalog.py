"""Where the lake's tables live: the embedded DuckDB file (default) or DuckLake over SQLite or PostgreSQL.

- `duckdb` (default, no configuration): one file `<lake>/mmlake.duckdb`. One writing process at a time;
  readers wait while it writes (mmlake.lake retries with jittered backoff).
- `sqlite` / `sqlite:PATH`: DuckLake with a SQLite catalog (default `<lake>/catalog.sqlite`, WAL mode)
  and the table data as Parquet files under the data path (default `<lake>/data/`). Many processes on
  one machine; readers are never locked out.
- `postgres:CONNINFO` (libpq key=value string or `postgresql://` URI; passwords belong in
  PGPASSWORD / ~/.pgpass, not here): DuckLake with a PostgreSQL catalog. Several machines, with the
  data path on a folder all of them mount (or an object store).

Chosen by `Lake(catalog=...)`, else what the lake folder was created with (`<lake>/catalog.json`, or
its `mmlake.duckdb`), else `$MMLAKE_CATALOG` (for new lakes), else `duckdb` (`resolve`). `$MMLAKE_DATA_PATH` (or `Lake(data_path=...)`) names
the Parquet folder.

Writers on DuckLake: DuckLake commits optimistically and refuses a commit that deletes from a table
another transaction changed since it began (every partition replace deletes the rows it replaces),
and its SQLite catalog answers concurrent commits with "database is locked" instead of waiting. So
mmlake serialises DuckLake *write transactions* with a blocking lock taken before the transaction
begins -- `flock` on `<catalog>.lock` for SQLite, `pg_advisory_lock` for PostgreSQL -- and releases it
at commit. A writer waits its turn (no error, no retry loop); the work before the write (reading
files, encoders) runs in parallel, and readers never wait. DuckLake's own commit retries then never
fire either (`LakeStats` counts what happened).

DuckDB's signature check of an extension file costs ~0.7 s per load, so each process keeps one
in-memory DuckDB instance per catalog (per read/write mode) with the extensions loaded and the
catalog attached, and every `Lake.connect` hands out a cursor on it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import duckdb

from mmlake.errors import LakeError

KINDS = ("duckdb", "sqlite", "postgres")
CATALOG_FILE = "catalog.json"
LAKE_ALIAS = "lake"
_EXTENSION_OF = {"sqlite": "sqlite_scanner", "postgres": "postgres_scanner"}
_LOCK_KEY = 0x6D6D6C616B65  # 'mmlake': the advisory lock's key


@dataclass(frozen=True)
class CatalogSpec:
    """kind: duckdb | sqlite | postgres; target: the SQLite file or the libpq conninfo (unused for
    duckdb); data_path: the folder (or URL) of DuckLake's Parquet files."""

    kind: str = "duckdb"
    target: str = ""
    data_path: str = ""
    data_path_given: bool = False  # named by the user: overrides the path the catalog recorded

    @property
    def is_ducklake(self) -> bool:
        return self.kind != "duckdb"

    def describe(self) -> str:
        if self.kind == "duckdb":
            return "duckdb (single file)"
        target = re.sub(r"(password\s*=\s*)\S+", r"\1***", self.target)
        return f"ducklake on {self.kind} {target}, data under {self.data_path}"


def parse_catalog(value: str | None, home: Path, data_path: str | None = None) -> CatalogSpec:
    """A CatalogSpec from 'duckdb' | 'sqlite' | 'sqlite:PATH' | 'postgres:CONNINFO' | 'postgresql://...'."""
    value = (value or "duckdb").strip()
    given = bool(data_path or os.environ.get("MMLAKE_DATA_PATH"))
    data = data_path or os.environ.get("MMLAKE_DATA_PATH") or str(home / "data")
    if "://" not in data:
        data = str(Path(data).resolve())
    data = data.rstrip("/") + "/"
    if value in ("duckdb", "file", ""):
        return CatalogSpec()
    if value == "sqlite" or value.startswith("sqlite:"):
        path = value.partition(":")[2] or str(home / "catalog.sqlite")
        return CatalogSpec("sqlite", str(Path(path).resolve()), data, given)
    if value.startswith(("postgresql://", "postgres://")):
        return CatalogSpec("postgres", value, data, given)
    if value.startswith(("postgres:", "postgresql:")):
        target = value.partition(":")[2].strip()
        if not target:
            raise LakeError("MMLAKE_CATALOG=postgres: needs a connection string, e.g. "
                            "'postgres:host=db.lab port=5432 dbname=mmlake user=mmlake'")
        return CatalogSpec("postgres", target, data, given)
    raise LakeError(f"unknown lake catalog {value!r}: use duckdb (the default single file), sqlite, "
                    "sqlite:PATH, postgres:CONNINFO or postgresql://USER@HOST:PORT/DB")


def resolve(home: Path, catalog: str | None = None, data_path: str | None = None) -> CatalogSpec:
    """The argument, else the catalog the lake folder was created with (its catalog.json; a folder
    holding mmlake.duckdb stays on the DuckDB file), else $MMLAKE_CATALOG, else the DuckDB file.
    $MMLAKE_CATALOG of the folder's own kind still applies (another machine's host name or socket for
    the same PostgreSQL catalog); one of another kind is ignored for an existing lake."""
    if catalog:
        return parse_catalog(catalog, home, data_path)
    env = os.environ.get("MMLAKE_CATALOG")
    recorded = home / CATALOG_FILE
    if recorded.exists():
        stored = json.loads(recorded.read_text())
        given = bool(data_path or os.environ.get("MMLAKE_DATA_PATH"))
        value = f"{stored['kind']}:{stored['target']}"
        if env and parse_catalog(env, home).kind == stored["kind"]:
            value = env
        spec = parse_catalog(value, home, data_path or os.environ.get("MMLAKE_DATA_PATH") or stored.get("data_path"))
        return CatalogSpec(spec.kind, spec.target, spec.data_path, given)
    if (home / "mmlake.duckdb").exists():
        return CatalogSpec()
    return parse_catalog(env, home, data_path)


def record(home: Path, spec: CatalogSpec) -> None:
    """Write <lake>/catalog.json so that later processes given only the folder find the catalog."""
    path = home / CATALOG_FILE
    if spec.is_ducklake and not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        rec = {"kind": spec.kind, "target": spec.target, "data_path": spec.data_path}
        tmp.write_text(json.dumps(rec, indent=1) + "\n")
        os.replace(tmp, path)


def extension_file(name: str) -> str:
    """The extension binary that the duckdb-extension-<name> wheel ships (no download, ever)."""
    pkg = f"duckdb_extension_{name}"
    try:
        mod = __import__(pkg)
    except ImportError as exc:
        raise LakeError(f"the DuckDB extension {name} is not installed: pip install "
                        f"duckdb-extension-{name.replace('_', '-')}=={duckdb.__version__}") from exc
    hits = glob.glob(os.path.join(os.path.dirname(mod.__file__), "extensions", f"v{duckdb.__version__}",
                                  f"{name}.duckdb_extension"))
    if not hits:
        raise LakeError(f"duckdb-extension-{name} does not match duckdb {duckdb.__version__}: "
                        f"pip install duckdb-extension-{name.replace('_', '-')}=={duckdb.__version__}")
    return hits[0]


# ---------------------------------------------------------------------------- instances
_instances: dict[tuple, duckdb.DuckDBPyConnection] = {}
_instances_lock = threading.Lock()


def attach_sql(spec: CatalogSpec, *, read_only: bool, as_of: str | None = None) -> str:
    opts = []
    if read_only or as_of:
        opts.append("READ_ONLY")
    if as_of:
        opts.append(f"SNAPSHOT_TIME '{_quote(as_of)}'")
    if not read_only and not as_of:
        opts.append(f"DATA_PATH '{_quote(spec.data_path)}'")
        if spec.data_path_given:
            opts.append("OVERRIDE_DATA_PATH TRUE")
    if spec.kind == "sqlite":
        opts.append("META_BUSY_TIMEOUT 60000")
        opts.append("META_JOURNAL_MODE 'WAL'")
    return f"ATTACH 'ducklake:{spec.kind}:{_quote(spec.target)}' AS {LAKE_ALIAS} ({', '.join(opts)})"


def instance(spec: CatalogSpec, *, read_only: bool, as_of: str | None = None,
             harden_files: bool = False) -> duckdb.DuckDBPyConnection:
    """This process's DuckDB instance with the catalog attached as `lake` (made on first use).
    `harden_files`: the instance refuses file access from SQL except DuckLake's own data folder."""
    key = (spec, read_only, as_of, harden_files, os.getpid())
    with _instances_lock:
        con = _instances.get(key)
        if con is not None:
            return con
        if spec.kind == "sqlite":
            Path(spec.target).parent.mkdir(parents=True, exist_ok=True)
        if "://" not in spec.data_path:
            Path(spec.data_path).mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(":memory:")
        for ext in ("ducklake", _EXTENSION_OF[spec.kind]):
            con.execute(f"LOAD '{_quote(extension_file(ext))}'")
        con.execute(attach_sql(spec, read_only=read_only, as_of=as_of))
        if harden_files:
            from mmlake.sqlguard import harden

            dirs = [spec.data_path] if "://" not in spec.data_path else []
            harden(con, dirs)
        _instances[key] = con
        return con


def drop_instances() -> None:
    """Close this process's catalog instances (tests; a stopped PostgreSQL server)."""
    with _instances_lock:
        for key, con in list(_instances.items()):
            if key[-1] == os.getpid():
                try:
                    con.close()
                except Exception:
                    pass
            _instances.pop(key, None)


@contextmanager
def cursor(spec: CatalogSpec, *, read_only: bool, as_of: str | None = None,
           harden_files: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection (cursor) on the process's instance, with `lake` as the default catalog."""
    cur = instance(spec, read_only=read_only, as_of=as_of, harden_files=harden_files).cursor()
    try:
        cur.execute(f"USE {LAKE_ALIAS}")
        yield cur
    finally:
        cur.close()


# ---------------------------------------------------------------------------- the writers' lock
@dataclass
class LakeStats:
    """What this process's lake connections met (the 8-writer test reads them)."""

    lock_retries: int = 0      # single file: reopen attempts while another process held the file
    write_waits: int = 0       # DuckLake: write transactions that waited for another writer's commit
    write_wait_s: float = 0.0  # ... and for how long in all


STATS = LakeStats()


_held = threading.local()


@contextmanager
def writer_lock(spec: CatalogSpec, timeout_s: float) -> Iterator[None]:
    """Hold the catalog's writer lock (blocking: the kernel's / PostgreSQL's queue). Re-entrant in a
    thread: a write connection opened while this thread already holds the lock (register_source
    records a refusal while its own transaction is open) shares it instead of waiting for itself."""
    depth = getattr(_held, "depth", {})
    _held.depth = depth
    key = (spec, os.getpid())
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    with _acquire(spec, timeout_s):
        depth[key] = 1
        try:
            yield
        finally:
            depth[key] = 0


@contextmanager
def _acquire(spec: CatalogSpec, timeout_s: float) -> Iterator[None]:
    t0 = time.monotonic()
    if spec.kind == "sqlite":
        import fcntl

        path = spec.target + ".lock"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                STATS.write_waits += 1
                fcntl.flock(fd, fcntl.LOCK_EX)  # blocks until the holder commits (or dies)
            STATS.write_wait_s += time.monotonic() - t0
            yield
        finally:
            os.close(fd)  # releases the lock
        return
    import psycopg

    conn = psycopg.connect(_libpq(spec.target), autocommit=True, connect_timeout=30)
    try:
        conn.execute(f"SET lock_timeout = {int(timeout_s * 1000)}")
        got = conn.execute("select pg_try_advisory_lock(%s)", [_LOCK_KEY]).fetchone()[0]
        if not got:
            STATS.write_waits += 1
            try:
                conn.execute("select pg_advisory_lock(%s)", [_LOCK_KEY])  # blocks; lock_timeout bounds it
            except psycopg.errors.LockNotAvailable as exc:
                raise LakeError(f"another writer held the lake's catalog for over {timeout_s:.0f} s; "
                                "stop it or raise lock_timeout_s") from exc
        STATS.write_wait_s += time.monotonic() - t0
        yield
    finally:
        conn.close()  # ends the session: the advisory lock goes with it, even after a crash


def _libpq(target: str) -> str:
    return target


def _quote(s: str) -> str:
    return str(s).replace("'", "''")


# ---------------------------------------------------------------------------- DDL for DuckLake
def ducklake_ddl(sql: str) -> str:
    """schema.sql for DuckLake, which has no PRIMARY KEY / UNIQUE constraints (NOT NULL only):
    the constraints are dropped; mmlake's write path keeps the keys unique (one row per key:
    schema_meta is written by delete + insert, materializations ids are fresh uuids)."""
    sql = re.sub(r"\s+PRIMARY\s+KEY\b", "", sql, flags=re.I)
    sql = re.sub(r"\s+UNIQUE\b", "", sql, flags=re.I)
    return sql


def spec_id(spec: CatalogSpec) -> str:
    return hashlib.sha256(json.dumps(asdict(spec)).encode()).hexdigest()[:12]


def is_ducklake(con) -> bool:
    """Whether `con`'s current catalog is a DuckLake."""
    row = con.execute("select type from duckdb_databases() where database_name = current_database()").fetchone()
    return bool(row) and str(row[0]).lower() == "ducklake"
