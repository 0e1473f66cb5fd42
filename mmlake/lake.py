"""The lake: its tables in a catalog (one DuckDB file by default) and a content-addressed object folder.

The catalog (mmlake.catalog) is the embedded DuckDB file `<lake>/mmlake.duckdb` unless
`MMLAKE_CATALOG` (or `Lake(catalog=...)`) selects DuckLake over SQLite (many processes, one machine)
or PostgreSQL (several machines), with the data as Parquet under `<lake>/data/`. Everything below
holds for all three; on DuckLake writers queue behind a blocking lock instead of retrying, readers
never wait, and `Lake(as_of=...)` reads any earlier snapshot (docs/operations.md, 'Catalogs').

Why this shape: DuckDB admits one writing process at a time and refuses even read-only opens from
other processes while one writes. Dagster's multiprocess executor runs partitions in parallel, so
every connection here is opened late, held for one short transaction, closed at once, and retried
with jittered backoff when another process holds the lock. All heavy work (reading files, FFTs,
encoders) happens before the write, so the lock is held for milliseconds, not minutes. The one
exception: inside a run (`mmlake.heldwrite.holding()`) the write connection is kept between the
run's own accesses until idle for `MMLAKE_HOLD_IDLE_S` (0.5 s).

A partition is replaced atomically: the rows the asset's previous materialization of that partition
wrote are copied to the `history` schema and deleted, and the new rows inserted, in one transaction
with the provenance row. A process killed mid-write leaves the previous rows. Nothing is dropped:
`history.<table>` holds every replaced row with the materialization that replaced it.

The upstream materializations an asset read are captured when it starts reading (`Provenance.upstream`)
and checked again inside the write transaction: if one was replaced in between, the write is refused,
so a row is never stamped with inputs it did not read.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import json
import os
import random
import re
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import duckdb
import numpy as np
import polars as pl

from mmlake import heldwrite
from mmlake.errors import LakeError

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
DEFAULT_HOME = ".mmlake"
_LOCK_WORDS = ("lock", "conflicting", "being used by another process")
HISTORY_SCHEMA = "history"


def _as_of_text(value: Any) -> str | None:
    """A timestamp (datetime or ISO text, UTC when naive) as ISO text, for DuckLake's SNAPSHOT_TIME."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise LakeError(f"--as-of {value!r} is not a timestamp (e.g. 2026-05-01T14:30:00, UTC "
                            "unless an offset is given)") from exc
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.isoformat()


def lake_home(home: str | os.PathLike | None = None) -> Path:
    """Resolve the lake folder: argument, else $MMLAKE_HOME, else ./.mmlake."""
    return Path(home or os.environ.get("MMLAKE_HOME") or DEFAULT_HOME).resolve()


def stable_hash(*parts: Any) -> str:
    """sha256 over a canonical JSON of the parts (sorted keys), for data versions and ids."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Provenance:
    """What made a set of rows: the ledger entry written in the same transaction as the rows."""

    asset_key: str
    partition_key: str | None
    code_version: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    upstream: Sequence[Mapping[str, str]] = ()  # [{"materialization_id":..., "data_version":...}]
    run_id: str | None = None
    device: str | None = None
    weights: str | None = None
    session_id: str | None = None
    session_ids: Sequence[str] = ()
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    check_upstream: bool = True  # refuse the write if an upstream read was replaced meanwhile

    @property
    def data_version(self) -> str:
        """hash(code version, parameters, weights, upstream data versions): equal inputs, equal
        versions; other weights (an encoder's file installed) give another version downstream too."""
        ups = sorted(u["data_version"] for u in self.upstream)
        return stable_hash(self.asset_key, self.code_version, dict(self.parameters), self.weights, ups)[:24]


class Lake:
    """Handle on a lake folder. Cheap to create; opens DuckDB only inside each call."""

    def __init__(self, home: str | os.PathLike | None = None, *, lock_timeout_s: float = 600.0,
                 catalog: str | None = None, data_path: str | None = None, as_of: Any = None,
                 allow_files: bool = False, own_sql: bool = False):
        """`catalog`: duckdb (default) | sqlite | sqlite:PATH | postgres:CONNINFO (mmlake.catalog; else
        $MMLAKE_CATALOG, else what the folder recorded). `as_of`: a timestamp: read-only connections
        see the lake as it was then (DuckLake snapshots only). Read-only connections refuse
        file-system access from SQL (mmlake.sqlguard.harden; DuckLake's own data folder stays
        readable) unless `allow_files=True`; write connections are never hardened. `own_sql=True`: only
        mmlake's own queries run on this object (a Dagster step's), so its reads may use a write
        connection this process holds after a commit (mmlake.heldwrite)."""
        from mmlake import catalog as _catalog

        self.home = lake_home(home)
        self.catalog = _catalog.resolve(self.home, catalog, data_path)
        # db_path: the file whose existence says "a lake is here" (the DuckDB file, or DuckLake's
        # catalog.json record, written when the lake is created)
        self.db_path = self.home / ("mmlake.duckdb" if not self.catalog.is_ducklake else _catalog.CATALOG_FILE)
        self.objects = self.home / "objects"
        self.lock_timeout_s = lock_timeout_s
        self.as_of = _as_of_text(as_of)
        if self.as_of and not self.catalog.is_ducklake:
            raise LakeError("--as-of needs a DuckLake catalog (snapshots); the single DuckDB file keeps "
                            "replaced rows in history.<table> instead: select * from history.chips "
                            "where replaced_at > TIMESTAMP")
        self.allow_files = allow_files
        self.own_sql = own_sql
        self._schema_applied = False
        self._version_checked = False
        self._local = threading.local()  # the shared read-only connection of `reading()`, per thread

    def __getstate__(self) -> dict:  # picklable (a worker process gets its own connections)
        state = dict(self.__dict__)
        state.pop("_local", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    # ------------------------------------------------------------------ connections
    @contextmanager
    def reading(self) -> Iterator["Lake"]:
        """Let the reads inside share one read-only connection (opened at the first read).

        Why: opening the DuckDB file costs ~30 ms CPU (its catalog of ~60 tables and views is read
        each time), and a step's bookkeeping makes a dozen small reads. Keep the block short (the
        reads before a computation, not the computation): while it is open, other processes cannot
        write to the lake. A write inside the block closes the shared connection first (DuckDB
        refuses a read-write and a read-only connection to one file in one process); the next read
        reopens it. Nested blocks share the outer one. DuckLake: a no-op (its cursors are cheap)."""
        loc = self._local
        if self.catalog.is_ducklake or getattr(loc, "depth", 0):
            loc.depth = getattr(loc, "depth", 0) + 1
            try:
                yield self
            finally:
                loc.depth -= 1
            return
        loc.depth, loc.ctx, loc.con = 1, None, None
        try:
            yield self
        finally:
            loc.depth = 0
            self._release_reader()

    def _release_reader(self) -> None:
        loc = self._local
        ctx = getattr(loc, "ctx", None)
        loc.ctx = loc.con = None
        if ctx is not None:
            ctx.__exit__(None, None, None)

    def _shared_reader(self):
        """The open shared connection inside `reading()` (opened now if needed), else None."""
        loc = self._local
        if not getattr(loc, "depth", 0) or self.catalog.is_ducklake:
            return None
        if loc.con is None:
            ctx = self._open(read_only=True)
            loc.con = ctx.__enter__()
            loc.ctx = ctx
        return loc.con

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one short transaction. The DuckDB file: opened here, retrying with
        jittered backoff while another process holds it (inside `reading()`, read-only connections
        are the block's shared one). DuckLake: a cursor on this process's attached catalog; a
        writing connection holds the catalog's writer lock (mmlake.catalog)."""
        if read_only:
            shared = self._shared_reader()
            if shared is not None:  # a cursor: its own result sets, the block's open database
                cur = shared.cursor()
                try:
                    yield cur
                finally:
                    cur.close()
                return
        elif getattr(self._local, "con", None) is not None:
            self._release_reader()
        with self._open(read_only=read_only) as con:
            yield con

    @contextmanager
    def _open(self, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.catalog.is_ducklake:
            with self._connect_ducklake(read_only=read_only) as con:
                yield con
            return
        self.home.mkdir(parents=True, exist_ok=True)
        if read_only and not self.db_path.exists():
            with self.connect():
                pass
        key = str(self.db_path)
        held = heldwrite.take(key)  # this process's write connection, kept after its last commit
        if held is not None and read_only and not self.own_sql:
            held.close()  # user SQL never runs on a write connection: release it, open as usual
            held = None
        con = held if held is not None else self._connect_file(read_only)
        try:
            if not read_only and not self._schema_applied:  # on this connection: an open costs ~30 ms
                from mmlake.migrate import upgrade

                upgrade(con, self.db_path)
                self._schema_applied = True
            if read_only and not self.allow_files and held is None:
                from mmlake.sqlguard import harden

                harden(con)
            if read_only and not self._version_checked:
                self._check_version(con)
            yield con
        except BaseException:
            con.close()
            raise
        # inside a run a write connection is kept for this process's next access, for at most
        # heldwrite.IDLE_S (a longer computation runs with the file free: mmlake.heldwrite)
        is_write = not read_only or held is not None
        if not is_write or not heldwrite.offer(key, _no_open_transaction(con), after_read=read_only):
            con.close()

    def _connect_file(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """duckdb.connect, retrying with jittered backoff while another process holds the file."""
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.02
        from mmlake.catalog import STATS

        while True:
            try:
                return duckdb.connect(str(self.db_path), read_only=read_only)
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                if not any(w in str(exc).lower() for w in _LOCK_WORDS) or time.monotonic() > deadline:
                    raise LakeError(
                        f"could not open the lake at {self.db_path}: {exc}. Another process may hold "
                        "it for longer than the lock timeout; stop it or raise lock_timeout_s."
                    ) from exc
                STATS.lock_retries += 1
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 1.6, 1.0)

    @contextmanager
    def _connect_ducklake(self, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        from mmlake import catalog as _catalog

        spec = self.catalog
        if self.as_of:
            read_only = True
        if read_only and not self.db_path.exists():
            if self.as_of:
                raise LakeError(f"no lake at {self.home}")
            self.home.mkdir(parents=True, exist_ok=True)
            with self._connect_ducklake(read_only=False):
                pass
        if read_only:
            with _catalog.cursor(spec, read_only=True, as_of=self.as_of,
                                 harden_files=not self.allow_files) as con:
                if not self._version_checked and not self.as_of:
                    self._check_version(con)
                yield con
            return
        self.home.mkdir(parents=True, exist_ok=True)
        with _catalog.writer_lock(spec, self.lock_timeout_s):
            with _catalog.cursor(spec, read_only=False) as con:
                if not self._schema_applied:
                    from mmlake.migrate import upgrade

                    upgrade(con, self.db_path)
                    self._schema_applied = True
                    _catalog.record(self.home, spec)
                yield con

    def _check_version(self, con) -> None:
        from mmlake.migrate import CURRENT, schema_version

        found = schema_version(con)
        if found is not None and found != CURRENT:
            raise LakeError(f"the lake at {self.home} has schema version {found}; this mmlake reads "
                            f"version {CURRENT}. Run `mmlake migrate` to upgrade it in place (no row "
                            "is lost; see README, 'Upgrading a lake').")
        self._version_checked = True

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Run a read-only query and return a polars frame."""
        with self.connect(read_only=True) as con:
            return con.execute(sql, params or []).pl()

    def ensure(self) -> "Lake":
        """Create the folder, the DuckDB file and apply the schema and views (idempotent)."""
        from mmlake.migrate import meta_value, set_meta

        with self.connect() as con:
            # re-creating the views is a catalog write (on the DuckDB file: a checkpoint at close,
            # ~20 ms of every writing command): only when views.sql changed
            sha = hashlib.sha256((SQL_DIR / "views.sql").read_bytes()).hexdigest()
            if meta_value(con, "views_sha") != sha or not _has_views(con):
                con.execute("begin transaction")
                apply_views(con)
                set_meta(con, "views_sha", sha)
                con.execute("commit")
        return self

    # ------------------------------------------------------------------ objects
    def put_bytes(self, data: bytes, suffix: str = "") -> str:
        """Store bytes under their sha256; returns the hash. Writing the same bytes twice is free."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.object_path(sha, suffix)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha

    def put_file(self, src: str | os.PathLike, suffix: str | None = None) -> str:
        """Copy a file into the object folder (streamed hash, never loaded whole)."""
        src = Path(src)
        sha = sha256_file(src)
        path = self.object_path(sha, src.suffix if suffix is None else suffix)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            with open(src, "rb") as fi, open(tmp, "wb") as fo:
                while chunk := fi.read(1 << 22):
                    fo.write(chunk)
            os.replace(tmp, path)
        return sha

    def put_array(self, arr: np.ndarray) -> str:
        """Store an array as .npy (never pickled); returns its sha256."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        return self.put_bytes(buf.getvalue(), ".npy")

    def get_array(self, sha: str, mmap: bool = False) -> np.ndarray:
        path = self.object_path(sha, ".npy")
        if not path.exists():
            raise LakeError(f"object {sha} is missing from {self.objects}")
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)

    def object_path(self, sha: str, suffix: str = "") -> Path:
        return self.objects / sha[:2] / f"{sha}{suffix}"

    def find_object(self, sha: str) -> Path:
        """Path of a stored object whatever its suffix."""
        hits = sorted((self.objects / sha[:2]).glob(f"{sha}*"))
        hits = [h for h in hits if not h.name.endswith(".tmp")]
        if not hits:
            raise LakeError(f"object {sha} is missing from {self.objects}")
        return hits[0]

    # ------------------------------------------------------------------ provenance + writes
    def current(self, asset_key: str, partition_key: str | None) -> dict[str, Any] | None:
        """The current materialization row of an asset partition, or None."""
        rows = self.query(
            "select * from materializations where asset_key = ? and partition_key is not distinct from ? "
            "and is_current order by finished_at desc limit 1",
            [asset_key, partition_key],
        ).to_dicts()
        return rows[0] if rows else None

    def require(self, asset_key: str, partition_key: str | None) -> dict[str, Any]:
        row = self.current(asset_key, partition_key)
        if row is None:
            raise LakeError(
                f"{asset_key} has not been materialized for partition {partition_key!r}; "
                "materialize it first (upstream assets run before downstream ones)."
            )
        return row

    def replace_partition(
        self,
        prov: Provenance,
        tables: Mapping[str, pl.DataFrame],
        scope: Mapping[str, Any] | None = None,
        software: Mapping[str, str] | None = None,
        table_scopes: Mapping[str, Mapping[str, Any]] | None = None,
        unless_current: bool = False,
    ) -> dict[str, Any]:
        """Atomically replace what one asset wrote for one partition, and record provenance.

        In one transaction: the rows of the asset's current materialization of `prov.partition_key`
        in each table (plus, when given, rows matching `scope` / `table_scopes[table]`, columns that
        identify the partition's rows, e.g. session_id) are copied to `history.<table>` and deleted,
        the new frames are inserted stamped with the new materialization_id, and the ledger row is
        written. If an upstream materialization recorded in `prov.upstream` is no longer current
        (another run replaced it after this one read it), nothing is written and LakeError says so.
        `unless_current=True`: when the current materialization already has this data version and
        these upstream ids, nothing is written and the result says ``unchanged`` (checked inside the
        transaction, so no separate read is needed and no other writer can slip in between).
        """
        mid = uuid.uuid4().hex
        finished = dt.datetime.now(dt.timezone.utc)
        software = dict(software or software_versions())
        with self.connect() as con:
            con.execute("begin transaction")
            try:
                if prov.check_upstream:
                    _check_upstream_current(con, prov)
                prev = con.execute(
                    "select materialization_id, data_version, upstream_ids from materializations "
                    "where asset_key = ? and partition_key is not distinct from ? and is_current "
                    "order by finished_at desc",
                    [prov.asset_key, prov.partition_key]).fetchall()
                prev_ids = [r[0] for r in prev]
                ups = sorted(u["materialization_id"] for u in prov.upstream)
                if unless_current and prev and prev[0][1] == prov.data_version and sorted(prev[0][2] or []) == ups:
                    con.execute("rollback")
                    return {"materialization_id": prev[0][0], "data_version": prov.data_version, "rows": {},
                            "unchanged": True}
                con.execute(
                    "update materializations set is_current = false where asset_key = ? "
                    "and partition_key is not distinct from ? and is_current",
                    [prov.asset_key, prov.partition_key],
                )
                con.execute(
                    "insert into materializations by name select * from (select ? as materialization_id, "
                    "? as asset_key, ? as partition_key, ? as session_id, ? as run_id, ? as code_version, "
                    "? as data_version, ? as parameters, ? as upstream_ids, ? as software, ? as device, "
                    "? as weights, ? as started_at, ? as finished_at, ? as row_count, true as is_current, "
                    "?::varchar[] as session_ids)",
                    [
                        mid, prov.asset_key, prov.partition_key, prov.session_id, prov.run_id,
                        prov.code_version, prov.data_version, json.dumps(dict(prov.parameters), default=str),
                        [u["materialization_id"] for u in prov.upstream], json.dumps(software),
                        prov.device, prov.weights, prov.started_at, finished,
                        sum(len(f) for f in tables.values()), list(prov.session_ids),
                    ],
                )
                columns = _table_columns(con, list(tables))
                for table, frame in tables.items():
                    sc = (table_scopes or {}).get(table, scope) or {}
                    conds, params = [], []
                    if prev_ids:
                        conds.append(f"materialization_id in ({','.join('?' * len(prev_ids))})")
                        params += prev_ids
                    if sc:
                        parts = []
                        for c, v in sc.items():
                            if isinstance(v, (list, tuple)):
                                parts.append(f"{c} in ({','.join('?' * len(v))})" if v else "false")
                                params += list(v)
                            else:
                                parts.append(f"{c} is not distinct from ?")
                                params.append(v)
                        conds.append("(" + " and ".join(parts) + ")")
                    if conds:
                        where = " or ".join(conds)
                        _archive(con, table, where, params, mid, finished, columns)
                        con.execute(f"delete from {table} where {where}", params)
                    if len(frame):
                        stamped = frame.with_columns(pl.lit(mid).alias("materialization_id"))
                        con.register("_incoming", stamped.to_arrow())
                        con.execute(f"insert into {table} by name select * from _incoming")
                        con.unregister("_incoming")
                con.execute("commit")
            except BaseException:
                con.execute("rollback")
                raise
        return {"materialization_id": mid, "data_version": prov.data_version, "rows": {t: len(f) for t, f in tables.items()}}


def _no_open_transaction(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """`con` with no transaction left open (one a caller left open is rolled back, as a close would)."""
    try:
        con.execute("rollback")
    except duckdb.TransactionException:
        pass
    return con


def _check_upstream_current(con: duckdb.DuckDBPyConnection, prov: Provenance) -> None:
    """Inside the write transaction: every upstream materialization the asset read is still current."""
    ids = [u["materialization_id"] for u in prov.upstream]
    if not ids:
        return
    rows = con.execute(
        f"select materialization_id, asset_key, is_current from materializations "
        f"where materialization_id in ({','.join('?' * len(ids))})", ids).fetchall()
    stale = [(r[1], r[0]) for r in rows if not r[2]]
    missing = set(ids) - {r[0] for r in rows}
    if stale or missing:
        what = ", ".join(f"{a} ({m[:12]})" for a, m in stale) or ", ".join(sorted(missing))
        raise LakeError(
            f"{prov.asset_key} [{prov.partition_key}]: its input {what} was replaced by another run while "
            "this step was computing; nothing was written, so no row claims inputs it did not read. "
            "Re-run the partition (one partition runs at a time through the run queue and `mmlake ingest`).")


def _table_columns(con: duckdb.DuckDBPyConnection, tables: list[str]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(schema, table) -> [(column, type)] of the main and history tables named (a history table
    not created yet is absent). From each table's result description, not `duckdb_columns()`:
    that reads every column of the whole catalog, ~8 ms on a fresh connection, against ~0.2 ms a
    table here."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for table in tables:
        for schema in ("main", HISTORY_SCHEMA):
            try:
                cur = con.execute(f"select * from {schema}.{table} limit 0")
            except duckdb.CatalogException:
                continue
            out[(schema, table)] = [(d[0], str(d[1])) for d in cur.description]
    return out


def _archive(con: duckdb.DuckDBPyConnection, table: str, where: str, params: list, mid: str,
             at: dt.datetime, columns: dict[tuple[str, str], list[tuple[str, str]]]) -> None:
    """Copy the rows about to be replaced to history.<table> (created, and widened, as needed);
    `columns` from `_table_columns` of the same transaction."""
    hist = f"{HISTORY_SCHEMA}.{table}"
    have = {name for name, _ in columns.get((HISTORY_SCHEMA, table), [])}
    if not have:
        con.execute(f"create schema if not exists {HISTORY_SCHEMA}")
        con.execute(f"create table if not exists {hist} as select *, null::varchar as replaced_by, "
                    f"null::timestamptz as replaced_at from {table} limit 0")
        have = {name for name, _ in columns.get(("main", table), [])} | {"replaced_by", "replaced_at"}
    for name, dtype in columns.get(("main", table), []):
        if name not in have:
            con.execute(f'alter table {hist} add column "{name}" {dtype}')
    con.execute(f"insert into {hist} by name select *, ?::varchar as replaced_by, ?::timestamptz as replaced_at "
                f"from {table} where {where}", [mid, at, *params])


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def apply_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Apply sql/schema.sql (every statement is IF NOT EXISTS, so this is idempotent). Use
    `mmlake.migrate.upgrade` on a lake that may be older: it also adds columns and rewrites ids."""
    from mmlake.catalog import ducklake_ddl, is_ducklake

    sql = (SQL_DIR / "schema.sql").read_text()
    con.execute(ducklake_ddl(sql) if is_ducklake(con) else sql)


def _has_views(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the lake has the views of sql/views.sql (a user may have dropped one)."""
    names = set(re.findall(r"create\s+or\s+replace\s+view\s+(\w+)", (SQL_DIR / "views.sql").read_text(), re.I))
    have = {r[0] for r in con.execute("select view_name from duckdb_views() where database_name = "
                                      "current_database() and not internal").fetchall()}
    return names <= have


def apply_views(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create the cross-campaign views of sql/views.sql."""
    path = SQL_DIR / "views.sql"
    if path.exists():
        con.execute(path.read_text())


def software_versions() -> dict[str, str]:
    """Versions of the libraries that shape results, recorded with every materialization (a copy of
    the process's first lookup: reading 12 packages' metadata costs ~30 ms, and a process does not
    change its installed packages under itself)."""
    return dict(_software_versions())


@functools.lru_cache(maxsize=1)
def _software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mmlake", "numpy", "torch", "torchvision", "hyperspy", "exspy", "rosettasciio",
                "scikit-learn", "python-louvain", "pymatgen", "duckdb", "dagster"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
