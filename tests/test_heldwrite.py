"""mmlake.heldwrite: inside a run, the write connection is kept between this process's accesses and
let go once idle for IDLE_S; user SQL never runs on it; a failed transaction is never kept; outside
a run nothing is held."""

import subprocess
import sys
import time
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


def wait_until_free(path: Path, within_s: float) -> float:
    """Seconds until another process can open `path` (fails after `within_s`)."""
    t0 = time.monotonic()
    while not other_process_can_open(path):
        assert time.monotonic() - t0 < within_s, f"still held after {within_s} s"
    return time.monotonic() - t0


def test_a_run_keeps_its_write_connection_across_accesses_and_lets_go_when_idle(tmp_path, opens, monkeypatch):
    step = Lake(tmp_path / "lake", own_sql=True).ensure()
    path = str(step.db_path)
    monkeypatch.setattr(heldwrite, "IDLE_S", 60.0)  # the reaper must not act during the first part
    with heldwrite.holding(path):
        opens.clear()
        for i in range(3):  # consecutive writes: one open, one connection
            step.replace_partition(Provenance(f"asset{i}", "p", "v1"), {"chips": chips_frame(2, f"s{i}@0")},
                                   {"session_id": f"s{i}@0"})
        assert opens == [False]
        assert not other_process_can_open(step.db_path)  # held: the next access is this process's
        with step.reading():  # a step's reads: on the held connection, kept after them
            n = step.query("select count(*) as n from chips")["n"][0]
            assert step.current("asset2", "p")["is_current"]
        assert n == 6 and opens == [False]
        assert not other_process_can_open(step.db_path)
        monkeypatch.setattr(heldwrite, "IDLE_S", 0.3)
        t0 = time.monotonic()
        assert step.query("select count(*) as n from chips")["n"][0] == 6  # re-offered: idle from now
        waited = time.monotonic() - t0 + wait_until_free(step.db_path, 20)
        assert waited >= 0.3 and opens == [False]  # the reaper closed it once idle for IDLE_S
        assert heldwrite.take(path) is None
        step.replace_partition(Provenance("asset0", "p", "v2"), {"chips": chips_frame(3, "s0@0")}, {"session_id": "s0@0"})
        assert opens == [False, False]  # the file had to be opened again
    assert other_process_can_open(step.db_path)  # the end of the run closes it
    assert Lake(tmp_path / "lake").query("select count(*) as n from chips")["n"][0] == 7


def test_with_no_idle_time_reads_let_go_at_once(tmp_path, opens, monkeypatch):
    step = Lake(tmp_path / "lake", own_sql=True).ensure()
    path = str(step.db_path)
    monkeypatch.setattr(heldwrite, "IDLE_S", 0.0)
    with heldwrite.holding(path):
        step.replace_partition(Provenance("a", "p", "v1"), {"chips": chips_frame(2)}, {"session_id": "s@0"})
        assert not other_process_can_open(step.db_path)  # a write keeps it until the next access
        assert step.query("select count(*) as n from chips")["n"][0] == 2
        assert heldwrite.take(path) is None and other_process_can_open(step.db_path)


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


@pytest.mark.parametrize("raw", ["soon", "-1", "inf"])
def test_a_bad_idle_setting_is_refused_naming_the_variable(raw, monkeypatch):
    monkeypatch.setenv("MMLAKE_HOLD_IDLE_S", raw)
    with pytest.raises(ValueError, match="MMLAKE_HOLD_IDLE_S"):
        heldwrite._idle_from_env()
    monkeypatch.setenv("MMLAKE_HOLD_IDLE_S", "0")
    assert heldwrite._idle_from_env() == 0.0
