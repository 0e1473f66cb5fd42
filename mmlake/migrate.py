"""Schema versions of the lake, and the upgrade of a lake written by an older mmlake.

Why a migration and not a rebuild: a lake holds what users ingested over years, and some raw folders
are gone; everything has to be carried over in place. `upgrade` runs on the first write connection
of every `Lake` (and by `mmlake migrate`), inside one transaction: a crash leaves the old lake.

- Any version: tables and views of sql/schema.sql that are missing are created, and columns that
  schema.sql has but the lake's table lacks are added (NULL for existing rows). New columns are
  therefore always nullable.
- 1 -> 2 (session identity): session ids were 'sample@dose' and partitions 'dose|sample'. Each session
  gets its identity id '<campaign key>.<sample>@<dose>~<acquisition>' (acquisition from the stored
  manifest's `acquisition`, else its acquired_at), rewritten in every table that has a session_id
  (history included); ledger partition keys become 'dose|<campaign key>.<sample>'; sessions and
  session_sources gain sample_key, acquisition, partition_key and content_sha (computed from the
  stored manifest and file hashes). Row counts of every table are compared before and after.
- 2 -> 3 (write cost independent of the ledger's size): `materializations` is rebuilt as schema.sql
  declares it, without the PRIMARY KEY on materialization_id (ids are uuid4 hex, unique by
  construction). DuckDB rewrote the key's whole index at the checkpoint of every write: 171 ms per
  write with 200,000 ledger rows, 20 ms without it. Rows, column order and values are copied as
  they are.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import duckdb

from mmlake.errors import LakeError

CURRENT = 3


def schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The lake's schema version; 1 for a lake from before versions were recorded; None when empty."""
    try:  # the common case, without a catalog query
        row = con.execute("select value from schema_meta where key = 'schema_version'").fetchone()
        if row:
            return int(row[0])
    except duckdb.CatalogException:
        pass
    tables = {r[0] for r in con.execute(
        "select table_name from information_schema.tables where table_schema = 'main' "
        "and table_catalog = current_database()").fetchall()}
    if "schema_meta" in tables:
        row = con.execute("select value from schema_meta where key = 'schema_version'").fetchone()
        if row:
            return int(row[0])
    return 1 if "materializations" in tables else None


def meta_value(con, key: str) -> str | None:
    """schema_meta's value for `key` (None when absent or when the lake has no schema_meta yet)."""
    try:
        row = con.execute("select value from schema_meta where key = ?", [key]).fetchone()
    except duckdb.CatalogException:
        return None
    return row[0] if row else None


def set_meta(con, key: str, value: str) -> None:
    """delete + insert, not INSERT OR REPLACE: DuckLake has no primary keys, so the write path keeps
    schema_meta at one row per key itself."""
    con.execute("delete from schema_meta where key = ?", [key])
    con.execute("insert into schema_meta values (?, ?, ?)", [key, value, dt.datetime.now(dt.timezone.utc)])


def upgrade(con: duckdb.DuckDBPyConnection, db_path: str | Path | None = None, *, force: bool = False) -> list[str]:
    """Bring the lake to the current schema (idempotent). Returns what was done, one line a step.
    Skipped when the lake records this schema.sql's sha already, unless `force` (`mmlake migrate`)."""
    from mmlake.lake import SQL_DIR, apply_schema

    schema_sha = hashlib.sha256((SQL_DIR / "schema.sql").read_bytes()).hexdigest()
    if not force:
        # nothing changed since this schema.sql was last applied: one query (~0.3 ms). On DuckLake
        # every DDL statement is a catalog write (a snapshot); on the DuckDB file the full check (row
        # counts of every table, a reference schema in memory) cost ~1 s per Lake object
        try:
            meta = dict(con.execute("select key, value from schema_meta "
                                    "where key in ('schema_version', 'schema_sha')").fetchall())
        except duckdb.CatalogException:
            meta = {}
        if meta.get("schema_version") == str(CURRENT) and meta.get("schema_sha") == schema_sha:
            return []
    version = schema_version(con)
    if version is not None and version > CURRENT:
        raise LakeError(f"the lake at {db_path} has schema version {version}, newer than this mmlake "
                        f"({CURRENT}); upgrade mmlake (pip install -e . in the newer checkout)")
    done: list[str] = []
    con.execute("begin transaction")
    try:
        before = _row_counts(con)
        apply_schema(con)
        done += _add_missing_columns(con, (SQL_DIR / "schema.sql").read_text())
        if version == 1:
            done += _v1_to_v2(con)
        if version is not None and version < 3:
            done += _v2_to_v3(con)
        after = _row_counts(con)
        lost = {t: (n, after.get(t, 0)) for t, n in before.items() if after.get(t, 0) < n}
        if lost:
            raise LakeError(f"migration would lose rows {lost}; nothing was changed")
        # delete + insert, not INSERT OR REPLACE: DuckLake has no primary keys (one row per key all the same)
        set_meta(con, "schema_version", str(CURRENT))
        set_meta(con, "schema_sha", schema_sha)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    if version is not None and version < CURRENT:
        done.insert(0, f"upgraded schema {version} -> {CURRENT}")
    return done


def _row_counts(con) -> dict[str, int]:
    out = {}
    for schema, table in con.execute(
            "select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE' "
            "and table_schema in ('main', 'history') and table_catalog = current_database()").fetchall():
        out[f"{schema}.{table}"] = con.execute(f"select count(*) from {schema}.{table}").fetchone()[0]
    return out


def _add_missing_columns(con, schema_sql: str) -> list[str]:
    """ALTER TABLE ADD COLUMN for every column schema.sql declares that the lake's table lacks."""
    ref = duckdb.connect(":memory:")
    try:
        ref.execute(schema_sql)
        want = ref.execute("select table_name, column_name, data_type from information_schema.columns "
                           "where table_schema = 'main' order by table_name, ordinal_position").fetchall()
    finally:
        ref.close()
    have = {(t, c) for t, c in con.execute(
        "select table_name, column_name from information_schema.columns where table_schema = 'main' "
        "and table_catalog = current_database()").fetchall()}
    done = []
    for table, column, dtype in want:
        if (table, column) not in have:
            con.execute(f'alter table {table} add column "{column}" {dtype}')
            done.append(f"added {table}.{column} {dtype}")
    return done


def _v2_to_v3(con) -> list[str]:
    """Rebuild `materializations` without its primary key (see the module docstring)."""
    from mmlake.lake import apply_schema

    keyed = con.execute(
        "select count(*) from duckdb_constraints() where database_name = current_database() and "
        "schema_name = 'main' and table_name = 'materializations' and constraint_type = 'PRIMARY KEY'"
    ).fetchone()[0]
    if not keyed:  # a DuckLake catalog (no keys there) or a lake created without it
        return []
    n = con.execute("select count(*) from materializations").fetchone()[0]
    con.execute("alter table materializations rename to _materializations_v2")
    apply_schema(con)  # creates materializations as schema.sql declares it now
    con.execute("insert into materializations by name select * from _materializations_v2")
    con.execute("drop table _materializations_v2")
    return [f"materializations: {n} rows rebuilt without the primary-key index"]


def _v1_to_v2(con) -> list[str]:
    from mmlake.manifest import acquisition_key, content_sha, make_sample_key, make_session_id

    rows = con.execute("select session_id, campaign, sample, dose_dpa, dose_key, acquired_at, manifest "
                       "from sessions").fetchall()
    idmap: dict[str, tuple[str, str, str, str, str]] = {}
    for old, campaign, sample, dose, dkey, acquired, manifest in rows:
        raw = json.loads(manifest) if manifest else {}
        acquired = acquired or dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
        if acquired.tzinfo is None:
            acquired = acquired.replace(tzinfo=dt.timezone.utc)
        acq = acquisition_key(acquired, raw.get("acquisition"))
        files = dict(con.execute("select role, sha256 from session_files where session_id = ? "
                                 "and role <> 'manifest'", [old]).fetchall())
        idmap[old] = (make_session_id(campaign, sample, dose, acq), make_sample_key(campaign, sample), acq,
                      f"{dkey}|{make_sample_key(campaign, sample)}", content_sha(raw, files))
    for old, campaign, sample, dkey, folder in con.execute(
            "select session_id, campaign, sample, dose_key, folder from session_sources").fetchall():
        if old in idmap:
            continue
        acq = "v1"  # registered but never materialized: the acquisition time was never stored
        try:
            from mmlake.manifest import load_manifest

            acq = load_manifest(folder).acquisition
        except Exception:
            pass
        idmap[old] = (make_session_id(campaign, sample, float(dkey), acq), make_sample_key(campaign, sample),
                      acq, f"{dkey}|{make_sample_key(campaign, sample)}", None)
    if not idmap:
        return []
    con.execute("create temp table _idmap (old varchar, new varchar, sample_key varchar, acquisition varchar, "
                "pkey varchar, content varchar, old_pkey varchar)")
    for old, (new, skey, acq, pkey, content) in idmap.items():
        sample, dkey = old.rsplit("@", 1)
        con.execute("insert into _idmap values (?,?,?,?,?,?,?)", [old, new, skey, acq, pkey, content, f"{dkey}|{sample}"])
    done = []
    for schema, table in con.execute(
            "select table_schema, table_name from information_schema.columns where column_name = 'session_id' "
            "and table_schema in ('main', 'history') and table_catalog = current_database() and table_name in "
            "(select table_name from information_schema.tables where table_type = 'BASE TABLE')").fetchall():
        n = con.execute(f"update {schema}.{table} as t set session_id = m.new from _idmap as m "
                        f"where t.session_id = m.old").fetchone()[0]
        done.append(f"{schema}.{table}: {n} session ids rewritten")
    con.execute("update materializations as t set partition_key = m.pkey from _idmap as m "
                "where t.partition_key = m.old_pkey")
    con.execute("update materializations set session_ids = [session_id] where session_id is not null "
                "and session_ids is null")
    for table in ("sessions", "session_sources"):
        con.execute(f"update {table} as t set sample_key = m.sample_key, acquisition = m.acquisition, "
                    f"partition_key = m.pkey, content_sha = coalesce(t.content_sha, m.content) "
                    f"from _idmap as m where t.session_id = m.new")
    # a registration without a stored session has no content hash yet: the next ingest of its folder
    # computes it (and counts as new content for that identity, which nothing stored can contradict)
    con.execute("drop table _idmap")
    done.append(f"{len(idmap)} sessions given identity ids")
    return done
