"""The lake under concurrency and crashes: parallel partitions lose no rows; a killed writer loses nothing.

On the default DuckDB file; `MMLAKE_TEST_CATALOG=sqlite|postgres pytest tests/test_lake.py` runs the same
tests on a DuckLake catalog (tests/conftest.py), and tests/test_lake_catalogs.py covers all three in
every run."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl

from assets.partitions import add_session_partitions
from mmlake.lake import Lake, Provenance
from mmlake.store import register_source
from tests.sessions import make_tiny_session

REPO = Path(__file__).resolve().parent.parent


def test_four_partitions_in_parallel_multiprocess(tmp_path, lake, instance):
    """Four runs at once (dagster.yaml's max_concurrent_runs), each on Dagster's multiprocess executor
    (the code location's default), launched through the real `dagster asset materialize` CLI: many
    processes (4 CLIs, their forkservers, 12 step processes) write the lake together. Four, not eight:
    each CLI run costs ~9 s of CPU on its own (start-up, forkserver preload, 3 step processes); eight
    writer processes on one lake are tests/test_lake_catalogs.py's (DuckLake catalogs)."""
    manifests = []
    n = 4
    for i in range(n):
        folder = make_tiny_session(tmp_path / f"s{i}", sample=f"par{i % 2}", dose_dpa=[0, 0.1][i // 2],
                                   seed=i, chip_px=4 + (i % 3))
        manifests.append(register_source(lake, folder).manifest)
    keys = add_session_partitions(instance, manifests)
    env = {**os.environ, "DAGSTER_HOME": instance.root_directory, "MMLAKE_HOME": str(lake.home)}
    procs = [subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "assets.definitions",
         "--select", "raw_session,chips", "--partition", str(k)],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for k in keys]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [e[-2000:] for e in errors if e]
    runs = instance.get_runs()
    assert len(runs) == n and all(r.is_success for r in runs)
    assert all(r.run_config.get("execution", {}) == {} for r in runs)  # default executor = multiprocess
    expected = {m.session_id: (32 // (4 + (i % 3))) ** 2 for i, m in enumerate(manifests)}
    got = lake.query("select session_id, count(*) as n, count(distinct chip_index) as d from chips group by 1")
    assert {r["session_id"]: r["n"] for r in got.to_dicts()} == expected
    assert (got["n"] == got["d"]).all()
    cur = lake.query("select asset_key, count(*) as n from materializations where is_current group by 1 order by 1")
    assert cur.to_dicts() == [{"asset_key": "chips", "n": n}, {"asset_key": "raw_session", "n": n}]
    orphans = lake.query("select count(*) as n from chips c anti join materializations m using (materialization_id)")
    assert orphans["n"][0] == 0


WRITER = textwrap.dedent("""
    import sys, polars as pl, numpy as np
    from mmlake.lake import Lake, Provenance
    lake = Lake(sys.argv[1])
    n = 20_000_000
    big = pl.DataFrame({"session_id": "s@0", "chip_index": np.arange(n, dtype=np.int32),
                        "row": np.zeros(n, np.int32), "col": np.zeros(n, np.int32),
                        "y0": np.zeros(n, np.int32), "x0": np.zeros(n, np.int32)})
    print("writing", flush=True)
    lake.replace_partition(Provenance("chips", "p", "v2"), {"chips": big}, {"session_id": "s@0"})
    print("committed", flush=True)
""")


def chips_frame(n):
    return pl.DataFrame({"session_id": "s@0", "chip_index": list(range(n)), "row": [0] * n, "col": [0] * n,
                         "y0": [0] * n, "x0": [0] * n})


def test_unless_current_writes_nothing_for_the_same_data_version(tmp_path):
    """replace_partition(unless_current=True) decides inside its transaction: the same data version and
    upstream ids write no row and keep the current materialization; other parameters replace it."""
    lake = Lake(tmp_path / "lake").ensure()
    first = lake.replace_partition(Provenance("chips", "p", "v1"), {"chips": chips_frame(5)}, {"session_id": "s@0"})
    again = lake.replace_partition(Provenance("chips", "p", "v1"), {"chips": chips_frame(7)}, {"session_id": "s@0"},
                                   unless_current=True)
    assert again["unchanged"] and again["materialization_id"] == first["materialization_id"]
    assert lake.query("select count(*) as n from chips")["n"][0] == 5
    assert lake.query("select count(*) as n from materializations")["n"][0] == 1
    other = lake.replace_partition(Provenance("chips", "p", "v1", parameters={"k": 1}), {"chips": chips_frame(7)},
                                   {"session_id": "s@0"}, unless_current=True)
    assert "unchanged" not in other and other["materialization_id"] != first["materialization_id"]
    assert lake.query("select count(*) as n from chips")["n"][0] == 7
    assert lake.current("chips", "p")["materialization_id"] == other["materialization_id"]


def test_killed_writer_leaves_previous_rows(tmp_path):
    lake = Lake(tmp_path / "lake").ensure()
    first = lake.replace_partition(Provenance("chips", "p", "v1"), {"chips": chips_frame(100)}, {"session_id": "s@0"})
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(lake.home)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(1.0)  # inside the transaction: deleting old rows / inserting 20M new ones
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows = lake.query("select count(*) as n, min(materialization_id) as m, max(materialization_id) as x from chips")
    assert rows["n"][0] == 100
    assert rows["m"][0] == rows["x"][0] == first["materialization_id"]
    cur = lake.current("chips", "p")
    assert cur["materialization_id"] == first["materialization_id"]


def test_reads_in_a_reading_block_share_one_connection_and_see_writes(tmp_path, monkeypatch):
    import duckdb

    import mmlake.lake as lake_mod

    lake = Lake(tmp_path / "lake").ensure()
    opened = []
    real = duckdb.connect

    def counting(path, read_only=False, **kw):
        opened.append(read_only)
        return real(path, read_only=read_only, **kw)

    monkeypatch.setattr(lake_mod.duckdb, "connect", counting)
    for _ in range(3):
        lake.query("select count(*) from chips")
    assert opened == [True, True, True]  # outside a block: one connection per read
    opened.clear()
    with lake.reading():
        with lake.reading():  # nested blocks share the outer one
            assert lake.query("select count(*) as n from chips")["n"][0] == 0
            assert lake.current("chips", "p") is None
        assert lake.query("select count(*) as n from chips")["n"][0] == 0
        assert opened == [True]
        # a write inside the block closes the shared connection, the next read sees the new rows
        lake.replace_partition(Provenance("chips", "p", "v1"), {"chips": chips_frame(5)}, {"session_id": "s@0"})
        assert lake.query("select count(*) as n from chips")["n"][0] == 5
        assert lake.current("chips", "p") is not None
    assert opened[0] is True and opened[-1] is True and opened.count(True) == 2
    # closed at the end: a second process can write at once
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        import polars as pl
        from mmlake.lake import Lake, Provenance
        frame = pl.DataFrame({{"session_id": "t@0", "chip_index": [0, 1, 2], "row": [0] * 3, "col": [0] * 3,
                              "y0": [0] * 3, "x0": [0] * 3}})
        Lake({str(lake.home)!r}, lock_timeout_s=2).replace_partition(
            Provenance("chips", "q", "v1"), {{"chips": frame}}, {{"session_id": "t@0"}})
    """)
    with lake.reading():
        lake.query("select 1")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert lake.query("select count(*) as n from chips")["n"][0] == 8
    import pickle  # a Lake still travels to worker processes

    copy = pickle.loads(pickle.dumps(lake))
    with copy.reading():
        assert copy.query("select count(*) as n from chips")["n"][0] == 8


def test_replaced_rows_go_to_history_which_is_created_and_widened_as_the_table_grows(tmp_path):
    """history.<table> is made by the first replace and gains the columns a later schema adds, with
    their types (a column added to the lake after history existed is kept, not dropped)."""
    lake = Lake(tmp_path / "lake").ensure()
    lake.replace_partition(Provenance("chips", "p", "v1"), {"chips": chips_frame(3)}, {"session_id": "s@0"})
    lake.replace_partition(Provenance("chips", "p", "v1"), {"chips": chips_frame(2)}, {"session_id": "s@0"})
    assert lake.query("select count(*) as n from history.chips")["n"][0] == 3
    with lake.connect() as con:  # a later schema adds a list column to chips
        con.execute("alter table chips add column note_codes integer[]")
    lake.replace_partition(Provenance("chips", "p", "v1"),
                           {"chips": chips_frame(1).with_columns(pl.lit([4, 5]).alias("note_codes"))},
                           {"session_id": "s@0"})
    lake.replace_partition(Provenance("chips", "p", "v1"), {"chips": chips_frame(1)}, {"session_id": "s@0"})
    hist = lake.query("select note_codes, replaced_by from history.chips order by replaced_at")
    assert hist.height == 3 + 2 + 1 and hist["note_codes"].to_list()[-1] == [4, 5]
    with lake.connect() as con:
        kind = con.execute("select data_type from duckdb_columns() where schema_name = 'history' "
                           "and table_name = 'chips' and column_name = 'note_codes'").fetchone()[0]
    assert kind == "INTEGER[]"


def test_replace_is_atomic_and_never_duplicates(tmp_path):
    lake = Lake(tmp_path / "lake").ensure()
    for n in (10, 7, 7):
        lake.replace_partition(Provenance("chips", "p", "v1"), {"chips": chips_frame(n)}, {"session_id": "s@0"})
    assert lake.query("select count(*) as n from chips")["n"][0] == 7
    hist = lake.query("select count(*) filter (where is_current) as cur, count(*) as all_ from materializations")
    assert (hist["cur"][0], hist["all_"][0]) == (1, 3)  # history kept for lineage, one current


def test_ensure_recreates_the_views_only_when_missing_or_changed(tmp_path):
    """Writing commands call ensure(); re-creating unchanged views was a catalog write (a checkpoint)
    each time. A dropped view comes back; views.sql's hash is recorded."""
    lake = Lake(tmp_path / "lake").ensure()
    with lake.connect() as con:
        sha = con.execute("select value from schema_meta where key = 'views_sha'").fetchone()[0]
        con.execute("drop view lineage")
    assert len(sha) == 64
    lake = Lake(tmp_path / "lake").ensure()
    assert lake.query("select count(*) as n from duckdb_views() where view_name = 'lineage'")["n"][0] == 1
