"""mmlake.heldwrite: inside a run, the write connection is kept from a commit to this process's next
access, and never longer: a read of the lake's own SQL uses it and then lets the file go; user SQL
never runs on it; a failed transaction is never kept; outside a run nothing is held."""

import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

import mmlake.lake as lake_mod
from mmlake import heldwrite
from mmlake.lake import Lake, Provenance

REPO = Path(__file__).resolve().parent.parent


def chips_frame(n: int, sid: str = "s@0") -> pl.DataFrame:
    return pl.DataFrame({"session_id": sid, "chip_index": list(range(n)), "row": [0] * n, "col": [0] * n,
                         "y0": [0] * n, "x0": [0] * n})


def other_process_can_open(path: Path) -> bool:
    code = ("import duckdb, sys\ntry:\n    duckdb.connect(sys.argv[1], read_only=True).close(); print('open')\n"
            "except duckdb.Error as e:\n    print('locked' if 'lock' in str(e).lower() else repr(e))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() in ("open", "locked"), out
    return out.stdout.strip() == "open"


@pytest.fixture
def opens(monkeypatch):
    """Count duckdb.connect calls made by mmlake.lake."""
    calls = []
    real = duckdb.connect

    def counting(*a, **k):
        calls.append(k.get("read_only", False))
        return real(*a, **k)

    monkeypatch.setattr(lake_mod.duckdb, "connect", counting)
    return calls


def test_a_run_keeps_its_write_connection_until_the_next_access_and_reads_let_go(tmp_path, opens):
    step = Lake(tmp_path / "lake", own_sql=True).ensure()
    path = str(step.db_path)
    with heldwrite.holding(path):
        opens.clear()
        for i in range(3):  # consecutive writes: one open, one connection
            step.replace_partition(Provenance(f"asset{i}", "p", "v1"), {"chips": chips_frame(2, f"s{i}@0")},
                                   {"session_id": f"s{i}@0"})
        assert opens == [False]
        assert not other_process_can_open(step.db_path)  # held: the next access is this process's
        with step.reading():  # a step's reads: on the held connection, which they then let go
            n = step.query("select count(*) as n from chips")["n"][0]
            assert step.current("asset2", "p")["is_current"]
        assert n == 6 and opens == [False]
        assert other_process_can_open(step.db_path)  # nothing held while the step computes
        step.replace_partition(Provenance("asset0", "p", "v2"), {"chips": chips_frame(3, "s0@0")}, {"session_id": "s0@0"})
        assert len(opens) == 2
    assert other_process_can_open(step.db_path)  # the end of the run closes it
    assert Lake(tmp_path / "lake").query("select count(*) as n from chips")["n"][0] == 7


def test_user_sql_never_runs_on_a_held_write_connection(tmp_path):
    step = Lake(tmp_path / "lake", own_sql=True).ensure()
    user = Lake(tmp_path / "lake")  # what `mmlake sql` and Python users get: hardened reads
    secret = tmp_path / "secret.txt"
    secret.write_text("not for SQL")
    with heldwrite.holding(str(step.db_path)):
        step.replace_partition(Provenance("chips", "p", "v1"), {"chips": chips_frame(2)}, {"session_id": "s@0"})
        with pytest.raises(duckdb.PermissionException):
            user.query(f"select * from read_text('{secret}')")
        assert user.query("select count(*) as n from chips")["n"][0] == 2
        assert heldwrite.take(str(step.db_path)) is None  # the user's read released it first


def test_a_failed_write_is_never_kept_and_nothing_is_held_outside_a_run(tmp_path, opens):
    step = Lake(tmp_path / "lake", own_sql=True).ensure()
    path = str(step.db_path)
    step.replace_partition(Provenance("chips", "p", "v1"), {"chips": chips_frame(2)}, {"session_id": "s@0"})
    assert heldwrite.take(path) is None and other_process_can_open(step.db_path)  # no run: closed
    with heldwrite.holding(path):
        with pytest.raises(Exception):  # a frame the table cannot take: the transaction fails
            step.replace_partition(Provenance("chips", "p", "v2"),
                                   {"chips": pl.DataFrame({"session_id": ["s@0"], "no_such_column": [1]})},
                                   {"session_id": "s@0"})
        assert heldwrite.take(path) is None and other_process_can_open(step.db_path)
        assert step.query("select count(*) as n from chips")["n"][0] == 2  # the old rows, intact


def test_after_a_run_the_lake_is_free_and_its_rows_are_whole(tmp_path, lake, instance):
    """A real ingest through Dagster (LakeResource holds for the run, its teardown lets go)."""
    from assets.runner import ingest
    from tests.sessions import make_tiny_session

    folder = make_tiny_session(tmp_path / "s", sample="held")
    out = ingest([folder], lake, instance, progress=lambda m: None, log_level="WARNING")
    assert out[0].ok, out
    assert other_process_can_open(lake.db_path)
    m = lake.query("select asset_key, count(*) as n from materializations where is_current group by 1")
    assert len(m) == 11 and set(m["n"]) == {1}
