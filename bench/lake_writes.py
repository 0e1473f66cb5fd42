"""What one partition write costs on a lab's archive, against the same write on an empty lake.

A step's write (`Lake.replace_partition`: archive the partition's old rows to history.<table>,
delete them, insert the new ones, one ledger row, commit, close) must not grow with the lake. This
bench builds, in one run:

- an empty lake (schema of this checkout);
- an archive lake: --sessions sessions of --chips chips each in `chips` (one materialization per
  session, rows clustered by session as ingest writes them), the same again in history.chips, and
  --ledger rows in `materializations` (years of re-runs);
- the archive lake again with the ledger declared as schema 2 did (materialization_id VARCHAR
  PRIMARY KEY), to show what schema 3 removed.

Then it replaces one existing session's chip rows (--chips rows, a fresh connection per write as every
step opens one) --repeat times on each lake and prints the median wall time of a write and its
parts (open, statements, close = checkpoint), and the archive's ratio to the empty lake.

Usage: python bench/lake_writes.py [--sessions 1000] [--chips 1024] [--ledger 200000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402
import polars as pl  # noqa: E402

import mmlake.lake as lake_mod  # noqa: E402
from mmlake.lake import Lake, Provenance  # noqa: E402


def build_archive(home: Path, sessions: int, chips: int, ledger: int) -> None:
    Lake(home).ensure()
    con = duckdb.connect(str(home / "mmlake.duckdb"))
    con.execute(f"""insert into materializations by name
        select md5('old' || i) as materialization_id, 'chips' as asset_key, '0|c.s' || (i % {sessions}) as partition_key,
               'chips-0' as code_version, 'dv' || i as data_version, 'r' as run_id, '{{}}' as parameters,
               ['up' || i] as upstream_ids, now() as started_at, now() as finished_at, {chips} as row_count,
               false as is_current, ['c.s' || (i % {sessions}) || '@0~a'] as session_ids
        from range({ledger}) t(i)""")
    con.execute(f"""insert into materializations by name
        select md5('cur' || s) as materialization_id, 'chips' as asset_key, '0|c.s' || s as partition_key,
               'chips-0' as code_version, 'dv' as data_version, 'r' as run_id, '{{}}' as parameters,
               [] as upstream_ids, now() as started_at, now() as finished_at, {chips} as row_count,
               true as is_current, ['c.s' || s || '@0~a'] as session_ids
        from range({sessions}) t(s)""")
    rows = f"""select 'c.s' || s || '@0~a' as session_id, c::integer as chip_index, (c // 32)::integer as row,
                      (c % 32)::integer as col, 0 as y0, 0 as x0, random() * 1e4 as eds_total_counts,
                      random() as haadf_mean, null::integer as truth_label, md5('cur' || s) as materialization_id
               from range({sessions}) a(s), range({chips}) b(c) order by s, c"""
    con.execute(f"insert into chips by name {rows}")
    con.execute("create schema if not exists history")
    con.execute(f"create table history.chips as select *, 'x'::varchar as replaced_by, now() as replaced_at "
                f"from ({rows})")
    con.execute("checkpoint")
    con.close()


def frame(session: str, chips: int) -> pl.DataFrame:
    return pl.DataFrame({"session_id": [session] * chips, "chip_index": list(range(chips)),
                         "row": [c // 32 for c in range(chips)], "col": [c % 32 for c in range(chips)],
                         "y0": [0] * chips, "x0": [0] * chips, "eds_total_counts": [1.0] * chips,
                         "haadf_mean": [0.5] * chips})


def timed_writes(home: Path, session: str, partition: str, chips: int, repeat: int) -> dict[str, float]:
    """Median seconds of a whole write and of its open / close, over `repeat` writes."""
    real_connect = duckdb.connect
    parts: dict[str, list[float]] = {"open": [], "close": [], "write": []}

    class Timed:
        def __init__(self, con):
            self._con = con

        def __getattr__(self, name):
            return getattr(self._con, name)

        def close(self):
            t = time.perf_counter()
            self._con.close()
            parts["close"].append(time.perf_counter() - t)

    def connect(*a, **k):
        t = time.perf_counter()
        con = real_connect(*a, **k)
        parts["open"].append(time.perf_counter() - t)
        return Timed(con)

    lake = Lake(home)
    data = frame(session, chips)
    lake_mod.duckdb.connect = connect
    try:
        lake.replace_partition(Provenance("chips", partition, "warm"), {"chips": data}, {"session_id": session})
        for k in parts:
            parts[k].clear()
        for i in range(repeat):
            t = time.perf_counter()
            lake.replace_partition(Provenance("chips", partition, f"v{i}"), {"chips": data}, {"session_id": session})
            parts["write"].append(time.perf_counter() - t)
    finally:
        lake_mod.duckdb.connect = real_connect
    return {k: statistics.median(v) for k, v in parts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--chips", type=int, default=1024)
    ap.add_argument("--ledger", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="mmlake-bench-writes-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; one session's {args.chips} chip rows "
          f"replaced {args.repeat} times per lake (median)")
    empty, archive, keyed = root / "empty", root / "archive", root / "archive_pk"
    for p in (empty, archive, keyed):
        shutil.rmtree(p, ignore_errors=True)
    Lake(empty).ensure()
    t = time.perf_counter()
    build_archive(archive, args.sessions, args.chips, args.ledger)
    shutil.copytree(archive, keyed)
    con = duckdb.connect(str(keyed / "mmlake.duckdb"))  # the ledger as schema 2 declared it
    ddl = con.execute("select sql from duckdb_tables() where table_name = 'materializations'").fetchone()[0]
    con.execute("alter table materializations rename to _m")
    con.execute(ddl.replace("materialization_id VARCHAR NOT NULL", "materialization_id VARCHAR PRIMARY KEY", 1))
    con.execute("insert into materializations by name select * from _m")
    con.execute("drop table _m")
    con.close()
    size = (archive / "mmlake.duckdb").stat().st_size / 1e6
    print(f"archive: {args.sessions} sessions x {args.chips} chips ({args.sessions * args.chips:,} rows in chips and "
          f"in history.chips), {args.ledger + args.sessions:,} ledger rows, {size:.0f} MB; built in "
          f"{time.perf_counter() - t:.1f} s")
    sid, pkey = "c.s7@0~a", "0|c.s7"
    base = timed_writes(empty, sid, pkey, args.chips, args.repeat)
    rows = [("empty lake", base), ("archive lake", timed_writes(archive, sid, pkey, args.chips, args.repeat)),
            ("archive, schema-2 ledger key", timed_writes(keyed, sid, pkey, args.chips, args.repeat))]
    print(f"  {'':30s} {'write':>9s} {'open':>9s} {'close':>9s}  vs empty")
    for name, r in rows:
        print(f"  {name:30s} {r['write'] * 1e3:7.1f}ms {r['open'] * 1e3:7.1f}ms {r['close'] * 1e3:7.1f}ms  "
              f"{r['write'] / base['write']:5.2f}x")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
