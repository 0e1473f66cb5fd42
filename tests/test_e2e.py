"""End to end with the real Dagster webserver and daemon (`dagster dev`, see tests/dagster_server.py):
a session copied into the landing zone becomes queryable through `mmlake sql` with no other action;
a broken session lands in rejected/ with its reason and changes nothing else."""

import time

import pytest

from tests.sessions import make_tiny_session

pytestmark = pytest.mark.slow


def test_landing_to_queryable(dagster_server):
    info = dagster_server.ingest_synthetic()
    sid = info["session_id"]
    # every session asset has a current materialization from the sensor's run
    mats = dagster_server.mmlake_sql(
        f"select asset_key, run_id, row_count from materializations where session_id = '{sid}' and is_current")
    assert {m["asset_key"] for m in mats} == set(info["assets"])
    runs = info["runs"]
    assert len(runs) == 1 and runs[0]["status"] == "SUCCESS", runs
    tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
    assert tags["dagster/sensor_name"] == "landing_sensor" and tags["dagster/run_key"].startswith(f"{sid}:")
    assert {m["run_id"] for m in mats} == {runs[0]["runId"]}
    # the chips are there, one row per chip of the grid, in the conventions' order
    chips = dagster_server.mmlake_sql(
        f"select count(*) as n, count(distinct chip_index) as d, max(chip_index) as last, "
        f"bool_and(chip_index = row * 8 + col) as ordered, count(eds_total_counts) as with_eds "
        f"from chips where session_id = '{sid}'")[0]
    assert chips == {"n": info["n_chips"], "d": info["n_chips"], "last": info["n_chips"] - 1,
                     "ordered": True, "with_eds": info["n_chips"]}
    last = dagster_server.mmlake_sql(
        f"select row_count from materializations where session_id = '{sid}' and is_current "
        f"and asset_key = '{info['last_asset']}'")
    assert last and last[0]["row_count"] > 0
    # the landing folder went to processed/; the lake read the sensor's staged copy
    landing = dagster_server.landing
    assert not (landing / info["folder"]).exists()
    assert (landing / "processed" / info["folder"] / "session.yaml").is_file()
    src = dagster_server.mmlake_sql(f"select folder from session_sources where session_id = '{sid}'")
    assert src[0]["folder"].startswith(str(dagster_server.lake_home / "staged" / sid) + "/")
    # asset checks ran in the same run and passed
    checks = dagster_server.graphql(
        "query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection(afterCursor: null) { "
        "events { __typename ... on AssetCheckEvaluationEvent { evaluation { checkName success } } } } } } }",
        {"id": runs[0]["runId"]})
    evals = {e["evaluation"]["checkName"]: e["evaluation"]["success"]
             for e in checks["runOrError"]["eventConnection"]["events"] if e["__typename"] == "AssetCheckEvaluationEvent"}
    assert evals.get("chips_cover_image") is True and evals.get("rows_have_materialization") is True, evals
    assert all(evals.values()), evals  # compositions_sum_to_100 too, once the descriptors asset exists
    print(f"\n[e2e] landing -> chips queryable: {info['first_seen'].get('chips', float('nan')):.1f} s; "
          f"-> {info['last_asset']}: {info['seconds_last_asset']:.1f} s; "
          f"run finished: {info['seconds_run_done']:.1f} s")


def test_broken_session_is_rejected_and_nothing_else_changes(dagster_server, tmp_path):
    info = dagster_server.ingest_synthetic()
    sid = info["session_id"]
    query = ("select asset_key, materialization_id from materializations where is_current "
             "order by asset_key, partition_key")
    before = dagster_server.mmlake_sql(query)
    bad = make_tiny_session(tmp_path / "broken_session", sample="broken", elements=["Fe", "Xx"])
    t0 = time.monotonic()
    dagster_server.drop_session(bad)
    note = dagster_server.landing / "rejected" / "broken_session" / "REJECTED.txt"
    dagster_server.wait_for("the broken session in rejected/", note.is_file, 120, 1.0)
    print(f"\n[e2e] broken session rejected after {time.monotonic() - t0:.1f} s")
    text = note.read_text()
    assert "broken@0" in text and "unknown element" in text and "Xx" in text
    assert not (dagster_server.landing / "broken_session").exists()
    # nothing registered, no run, the good session's rows and folders untouched
    assert dagster_server.mmlake_sql("select session_id from session_sources order by 1") == [{"session_id": sid}]
    assert dagster_server.session_runs("broken@0") == []
    assert dagster_server.mmlake_sql(query) == before
    assert (dagster_server.landing / "processed" / info["folder"] / "session.yaml").is_file()
