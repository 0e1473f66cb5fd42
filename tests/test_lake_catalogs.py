"""The lake on its three catalogs: the DuckDB file (default), DuckLake over SQLite, DuckLake over PostgreSQL.

Schema, views, example queries, provenance, atomic partition replace, history and the identity rules
behave the same on each; on DuckLake a replaced session's earlier rows are also readable by snapshot
(`Lake(as_of=...)`, `mmlake sql --as-of`); 8 writer processes at once lose no row and need no
lake-level lock retry. The whole lake test-suite runs on a DuckLake catalog with
`MMLAKE_TEST_CATALOG=sqlite|postgres pytest tests/test_lake.py tests/test_identity.py tests/test_lake_catalogs.py`.
"""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from mmlake.errors import LakeError, SessionError
from mmlake.lake import SQL_DIR, Lake, Provenance
from mmlake.store import register_source
from tests.sessions import make_tiny_session

REPO = Path(__file__).resolve().parent.parent
CATALOGS = ["duckdb", "sqlite", "postgres"]


@pytest.fixture(params=CATALOGS)
def catalog(request):
    if request.param == "postgres":
        return "postgres:" + request.getfixturevalue("postgres_server").database()
    return request.param


def make_lake(tmp_path, catalog) -> Lake:
    return Lake(tmp_path / "lake", catalog=catalog).ensure()


def chips_frame(n, sid="s@0", offset=0):
    return pl.DataFrame({"session_id": sid, "chip_index": list(range(n)), "row": [offset] * n, "col": [0] * n,
                         "y0": [0] * n, "x0": [0] * n})


def test_schema_views_and_queries_are_the_same(tmp_path, catalog):
    lake = make_lake(tmp_path, catalog)
    ref = duckdb.connect()
    ref.execute((SQL_DIR / "schema.sql").read_text())
    ref.execute((SQL_DIR / "views.sql").read_text())
    want = ref.execute("select table_name, table_type, column_name, data_type from information_schema.columns "
                       "join information_schema.tables using (table_catalog, table_schema, table_name) "
                       "where table_schema = 'main' order by all").fetchall()
    got = lake.query("select table_name, table_type, column_name, data_type from information_schema.columns "
                     "join information_schema.tables using (table_catalog, table_schema, table_name) "
                     "where table_schema = 'main' and table_catalog = current_database() "
                     "and table_name <> 'schema_meta' or (table_name = 'schema_meta' and false) order by all")
    want = [r for r in want if r[0] != "schema_meta"]
    assert [tuple(r) for r in got.rows()] == want
    assert lake.query("select count(*) as n from phase_roles")["n"][0] == 3  # seeded once
    Lake(lake.home).ensure()  # idempotent, and found again from the folder alone
    assert lake.query("select count(*) as n from phase_roles")["n"][0] == 3
    assert Lake(lake.home).catalog.kind == lake.catalog.kind
    for path in sorted((SQL_DIR / "queries").glob("*.sql")):
        lake.query(path.read_text())  # every example question runs (empty answers on an empty lake)


def test_replace_is_atomic_archives_history_and_never_duplicates(tmp_path, catalog):
    lake = make_lake(tmp_path, catalog)
    mids = [lake.replace_partition(Provenance("chips", "p", "v1"), {"chips": chips_frame(n)},
                                   {"session_id": "s@0"})["materialization_id"] for n in (10, 7, 7)]
    got = lake.query("select count(*) as n, count(distinct chip_index) as d, min(materialization_id) as m "
                     "from chips")
    assert (got["n"][0], got["d"][0], got["m"][0]) == (7, 7, mids[-1])
    hist = lake.query("select count(*) filter (where is_current) as cur, count(*) as all_ from materializations")
    assert (hist["cur"][0], hist["all_"][0]) == (1, 3)
    arch = lake.query("select replaced_by, count(*) as n from history.chips group by 1 order by n desc")
    assert arch.rows() == [(mids[1], 10), (mids[2], 7)]
    lin = lake.query("select count(*) as n from lineage where root_id = ?", [mids[-1]])
    assert lin["n"][0] == 1
    # a failing write changes nothing: the previous rows and the ledger stay as they were
    bad = chips_frame(3).with_columns(pl.lit("not a number").alias("row"))
    with pytest.raises(Exception):
        lake.replace_partition(Provenance("chips", "p", "v2"), {"chips": bad}, {"session_id": "s@0"})
    assert lake.current("chips", "p")["materialization_id"] == mids[-1]
    assert lake.query("select count(*) as n from chips")["n"][0] == 7
    assert lake.query("select count(*) as n from history.chips")["n"][0] == 17
    # the keys the DuckDB file enforces with PRIMARY KEY stay unique on DuckLake too
    for table, key in (("schema_meta", "key"), ("materializations", "materialization_id")):
        dup = lake.query(f"select {key}, count(*) as n from {table} group by 1 having count(*) > 1")
        assert dup.height == 0, (table, dup)


def test_refused_when_an_upstream_was_replaced(tmp_path, catalog):
    lake = make_lake(tmp_path, catalog)
    up = lake.replace_partition(Provenance("raw_session", "p", "v"), {}, None)
    read = [{"materialization_id": up["materialization_id"], "data_version": up["data_version"]}]
    lake.replace_partition(Provenance("raw_session", "p", "v", parameters={"other": 1}), {}, None)
    with pytest.raises(LakeError, match="replaced by another run"):
        lake.replace_partition(Provenance("chips", "p", "v", upstream=read), {"chips": chips_frame(2)},
                               {"session_id": "s@0"})
    assert lake.query("select count(*) as n from chips")["n"][0] == 0


def test_identity_rules(tmp_path, catalog):
    lake = make_lake(tmp_path, catalog)
    a = make_tiny_session(tmp_path / "a", sample="ident", seed=1)
    assert register_source(lake, a).status == "new"
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(a), str(copy)], check=True)
    assert register_source(lake, copy).status == "unchanged"
    b = make_tiny_session(tmp_path / "b", sample="ident", seed=2)
    with pytest.raises(SessionError, match="already holds different content"):
        register_source(lake, b)
    assert register_source(lake, b, replace=True).status == "replaced"
    ev = lake.query("select event from session_events order by event_at")["event"].to_list()
    assert ev == ["registered", "refused", "replaced"]
    reg = lake.query("select session_id, count(*) as n from session_sources group by 1")
    assert reg["n"].to_list() == [1]  # one registration per identity


def test_replaced_rows_by_snapshot_and_in_history(tmp_path, catalog):
    lake = make_lake(tmp_path, catalog)
    first = lake.replace_partition(Provenance("chips", "p", "v1"), {"chips": chips_frame(5, offset=1)},
                                   {"session_id": "s@0"})
    between = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.05)
    lake.replace_partition(Provenance("chips", "p", "v1"), {"chips": chips_frame(3, offset=2)}, {"session_id": "s@0"})
    hist = lake.query("select * exclude (replaced_by, replaced_at) from history.chips order by chip_index")
    assert hist["materialization_id"].unique().to_list() == [first["materialization_id"]]
    if catalog == "duckdb":
        with pytest.raises(LakeError, match="needs a DuckLake catalog"):
            Lake(lake.home, as_of=between)
        return
    old = Lake(lake.home, as_of=between.isoformat()).query("select * from chips order by chip_index")
    assert old.equals(hist.select(old.columns))  # the snapshot and the history schema agree
    assert old["row"].unique().to_list() == [1]
    assert lake.query("select distinct row from chips")["row"].to_list() == [2]
    before = Lake(lake.home, as_of=between - dt.timedelta(hours=1))
    with pytest.raises(Exception):
        before.query("select * from chips")  # before the lake existed: no snapshot, said so
    # the same through the command line
    env = {**os.environ, "MMLAKE_CATALOG": catalog}
    out = subprocess.run([sys.executable, "-m", "assets.cli", "sql", "--lake", str(lake.home), "--as-of",
                          between.isoformat(), "--format", "json", "select count(*) as n, min(row) as r from chips"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == [{"n": 5, "r": 1}]


def test_read_only_connections_refuse_files_but_read_the_lake(tmp_path, catalog):
    """Issue 14 for every read-only connection, not only `mmlake sql`."""
    lake = make_lake(tmp_path, catalog)
    lake.replace_partition(Provenance("chips", "p", "v1"), {"chips": chips_frame(2000)}, {"session_id": "s@0"})
    guarded = Lake(lake.home, catalog=catalog)  # the default: read-only connections are hardened
    assert guarded.query("select count(*) as n from chips")["n"][0] == 2000  # Parquet files of DuckLake too
    from mmlake.sqlguard import FileAccessRefused, guarded as explain

    with pytest.raises(FileAccessRefused):
        with explain():
            guarded.query(f"select * from read_text('{REPO / 'pyproject.toml'}')")
    allowed = Lake(lake.home, catalog=catalog, allow_files=True)
    assert allowed.query(f"select count(*) as n from read_text('{REPO / 'pyproject.toml'}')")["n"][0] == 1


WRITER = textwrap.dedent("""
    import json, sys, time
    import polars as pl
    from mmlake.lake import Lake, Provenance
    from mmlake.catalog import STATS
    home, catalog, part, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    lake = Lake(home, catalog=catalog)
    t0 = time.monotonic()
    for k in range(rounds):
        n = 50 + k
        frame = pl.DataFrame({"session_id": part, "chip_index": list(range(n)), "row": [k] * n, "col": [0] * n,
                              "y0": [0] * n, "x0": [0] * n})
        lake.replace_partition(Provenance("chips", part, f"v{k}"), {"chips": frame}, {"session_id": part})
    print(json.dumps({"lock_retries": STATS.lock_retries, "write_waits": STATS.write_waits,
                      "wait_s": round(STATS.write_wait_s, 2), "s": round(time.monotonic() - t0, 2)}), flush=True)
""")


@pytest.mark.parametrize("catalog", ["sqlite", "postgres"], indirect=True)
def test_eight_writers_lose_no_row_and_never_retry(tmp_path, catalog):
    lake = make_lake(tmp_path, catalog)
    rounds = 2
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(lake.home), catalog, f"w{i}", str(rounds)],
                              env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(8)]
    reads = 0
    while any(p.poll() is None for p in procs):  # readers are never locked out while they write
        lake.query("select count(*) from chips")
        reads += 1
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [e[-2000:] for _, e in outs]
    stats = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    print(f"8 writers x {rounds} on {catalog.split(':')[0]}: {stats}; {reads} reads meanwhile")
    assert sum(s["lock_retries"] for s in stats) == 0
    got = lake.query("select session_id, count(*) as n, count(distinct chip_index) as d, min(row) as r "
                     "from chips group by 1 order by 1")
    assert got.rows() == [(f"w{i}", 50 + rounds - 1, 50 + rounds - 1, rounds - 1) for i in range(8)]
    led = lake.query("select count(*) as n, count(*) filter (where is_current) as cur from materializations")
    assert (led["n"][0], led["cur"][0]) == (8 * rounds, 8)
    hist = lake.query("select count(*) as n from history.chips")
    assert hist["n"][0] == 8 * sum(50 + k for k in range(rounds - 1))
    assert reads > 0


KILLED = textwrap.dedent("""
    import sys, time
    from mmlake.lake import Lake
    lake = Lake(sys.argv[1], catalog=sys.argv[2])
    with lake.connect() as con:
        con.execute("begin transaction")
        con.execute("delete from chips")
        con.execute("insert into chips by name select 's@0' as session_id, range::int as chip_index, 0 as row, "
                    "0 as col, 0 as y0, 0 as x0, 'killed' as materialization_id from range(1000)")
        print("in transaction", flush=True)
        time.sleep(600)
""")


@pytest.mark.parametrize("catalog", ["sqlite", "postgres"], indirect=True)
def test_killed_writer_releases_the_lake(tmp_path, catalog):
    """A writer killed inside its transaction leaves the previous rows, and its writer lock goes with
    it: the next writer proceeds at once."""
    lake = make_lake(tmp_path, catalog)
    first = lake.replace_partition(Provenance("chips", "p", "v1"), {"chips": chips_frame(10)}, {"session_id": "s@0"})
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(lake.home), catalog], stdout=subprocess.PIPE,
                            text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == "in transaction"
        assert lake.query("select count(*) as n from chips")["n"][0] == 10  # readers see the committed rows
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    t0 = time.monotonic()
    lake.replace_partition(Provenance("chips", "p", "v2"), {"chips": chips_frame(4)}, {"session_id": "s@0"})
    assert time.monotonic() - t0 < 60
    assert lake.query("select count(*) as n from history.chips where materialization_id = ?",
                      [first["materialization_id"]])["n"][0] == 10
    assert lake.query("select count(*) as n from chips")["n"][0] == 4
