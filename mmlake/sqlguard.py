"""SQL that stays in the lake: DuckDB connections without file-system access.

`mmlake sql` and the lake's other read-only connections answer questions about the lake's tables.
DuckDB, left as it is, also reads and writes any file the process may touch (`COPY ... TO
'/any/path'`, `read_text('/etc/...')`, `read_csv`, `glob`, `ATTACH`, `EXPORT DATABASE`, `INSTALL`).
`harden(con)` turns that off for the connection's database and locks the configuration so a query
cannot turn it back on:

    SET allowed_directories = [...]      -- optional: folders that stay readable (see below)
    SET enable_external_access = false   -- no file access from SQL, no extension installs
    SET lock_configuration = true        -- no further SET / RESET / PRAGMA that changes settings

Queries that only touch the lake's tables and views run as before (JSON, sorting that spills to
DuckDB's own temp directory, and the statically linked extensions keep working). A refused
statement raises `duckdb.PermissionException` (or `InvalidInputException` for a locked setting);
`explain(exc)` / `guarded()` turn it into `FileAccessRefused`, whose message says how to allow files:
`mmlake sql --allow-files`, or (in Python) a connection that was not hardened.

Ordering constraints (read before calling `harden` on an already-open connection):
- **Database-wide, not per connection**: DuckDB keeps one database instance per file and process,
  shared by every connection and cursor to that file opened in this process while any of them is
  open. Hardening one hardens all of them, for as long as the instance lives; the setting cannot be
  undone (the configuration is locked). To run a query with file access, close every connection
  to the file first and open a new one (a new instance), which starts with the defaults.
- Do everything that needs files **before** `harden`: `ATTACH` other databases, `LOAD`/`INSTALL`
  extensions, `SET temp_directory` / `memory_limit` / `threads` (locked afterwards), and read
  `sql/*.sql` from Python (Python's own file access is not affected).
- **Views that read files** (`create view v as select * from read_parquet('x/*.parquet')`) keep
  their definition but fail when queried after `harden` unless their folder is passed in
  `allowed_directories` (DuckDB's `allowed_directories`; it can only be set *before*
  `enable_external_access = false`, which is why `harden` sets it first). The lake's own views
  (`sql/views.sql`) read only tables, so they need nothing.
- An open read-write connection in the same process shares the instance too: harden read-only
  connections only (DuckDB refuses to open the same file read-only and read-write at once anyway).
- Python replacement scans stop working: a query that names a local polars/pandas/arrow variable
  (`con.execute("select * from df")`) fails with "Table with name df does not exist";
  `con.register("df", df)` before the query still works (mmlake.similar does that).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterable, Iterator

from mmlake.errors import LakeError

ALLOW_HINT = ("this connection has no file-system access (the lake's SQL stays in the lake): "
              "`mmlake sql` refuses COPY ... TO, read_csv/read_text/read_parquet/glob of files, ATTACH, "
              "EXPORT and INSTALL. To allow them, run `mmlake sql --allow-files \"...\"` (in Python: "
              "a connection that was not passed to mmlake.sqlguard.harden)")

_REFUSAL_WORDS = ("file system operations are disabled", "enable_external_access",
                  "the configuration has been locked", "allowed_directories", "allowed_paths")


class FileAccessRefused(LakeError):
    """A statement needed file-system access on a hardened connection."""


def harden(con, allowed_directories: Iterable[str | os.PathLike] = ()):
    """Turn off file-system access from SQL on `con`'s database and lock its configuration.

    Works on an already-open connection (read-only or not) and returns it. `allowed_directories`:
    folders whose files stay readable (a view over parquet files in the lake, say); each must
    exist. Idempotent: a connection that is already hardened is returned as it is. See the module
    docstring for what it affects (the whole database instance) and what must happen before it.
    """
    if is_hardened(con):
        return con
    dirs = []
    for d in allowed_directories:
        p = os.path.realpath(os.fspath(d))
        if not os.path.isdir(p):
            raise ValueError(f"allowed_directories: {d!s} is not a folder")
        dirs.append(p.rstrip("/") + "/")
    if dirs:
        con.execute("SET allowed_directories = ?", [dirs])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def is_hardened(con) -> bool:
    """Whether `con`'s database has file access off and its configuration locked."""
    ext, lock = con.execute("select current_setting('enable_external_access'), "
                            "current_setting('lock_configuration')").fetchone()
    return (not _truthy(ext)) and _truthy(lock)


def is_refusal(exc: BaseException) -> bool:
    """Whether a DuckDB error is a hardened connection refusing file access or a settings change."""
    name = type(exc).__name__
    return name in ("PermissionException", "InvalidInputException") and any(
        w in str(exc) for w in _REFUSAL_WORDS)


def explain(exc: BaseException) -> BaseException:
    """`FileAccessRefused` (DuckDB's reason plus how to allow files) for a refusal, else `exc`."""
    if not is_refusal(exc):
        return exc
    reason = str(exc).splitlines()[0]
    return FileAccessRefused(f"{reason}. {ALLOW_HINT}")


@contextmanager
def guarded() -> Iterator[None]:
    """Re-raise refusals of a hardened connection as `FileAccessRefused` (other errors unchanged)."""
    try:
        yield
    except Exception as exc:
        new = explain(exc)
        if new is exc:
            raise
        raise new from exc


def execute(con, sql: str, params=None):
    """`con.execute(sql, params)` with refusals explained (`guarded`)."""
    with guarded():
        return con.execute(sql, params or [])


def _truthy(v) -> bool:
    return v is True or str(v).lower() in ("true", "1")
