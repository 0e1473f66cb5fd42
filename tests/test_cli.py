"""The command line a person meets (issue 15): one-line errors and exit codes, no silent success,
`--lake` anywhere, output sized and complete, encoder options, quiet imports, the shipped crystal
excerpt. Fast: tiny hand-written lakes; one raw_session run; no demo campaign."""

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from assets.cli import main, render_table
from mmlake.lake import Lake
from tests.sessions import make_tiny_session, sid, write_manifest

REPO = Path(__file__).resolve().parent.parent
SHA = "ab" * 32


@pytest.fixture
def small_lake(tmp_path):
    """A lake with two sessions rows (nested columns, 64-character sha values) and no Dagster runs."""
    lake = Lake(tmp_path / "lake").ensure()
    con = duckdb.connect(str(lake.db_path))
    for i, sample in enumerate(["pristine", "irradiated"]):
        con.execute(
            "insert into sessions (session_id, campaign, sample, dose_dpa, dose_key, haadf_shape, elements, "
            "manifest, materialization_id, content_sha, sample_key) values (?,?,?,?,?,?,?,?,?,?,?)",
            [f"c1.{sample}@0.1~20240501T1200{i}0", "c1", sample, 0.1, "0.1", [32, 32], ["La", "Fe"],
             json.dumps({"a": {"b": i}}), f"m{i}", SHA, f"c1.{sample}"])
    con.close()
    return lake


def run(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def cli(*args, env=None, cwd=REPO):
    """The installed `mmlake` as a user runs it (stdout / stderr are pipes)."""
    return subprocess.run([str(REPO / ".venv" / "bin" / "mmlake"), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


# ----------------------------------------------------------------------------------- no silent success
def test_read_commands_never_create_a_lake(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "typo"
    for argv in (["sql", "select 1"], ["report", "c1"], ["export", "x@0~1"], ["migrate", "--no-dagster"]):
        rc, out, err = run(["--lake", str(missing), *argv], capsys)
        assert rc == 2 and out == ""
        assert err == (f"error: no lake at {missing} (from --lake); create one with `make demo` or "
                       "`mmlake ingest PATH`, or point --lake at an existing lake folder\n"), err
    monkeypatch.setenv("MMLAKE_HOME", str(missing))
    rc, _, err = run(["sql", "select 1"], capsys)
    assert rc == 2 and f"no lake at {missing} (from $MMLAKE_HOME)" in err
    assert not missing.exists()


def test_lake_option_anywhere(small_lake, capsys):
    q = "select count(*) as n from sessions"
    for argv in (["--lake", str(small_lake.home), "sql", q, "--format", "csv"],
                 ["sql", q, "--format", "csv", "--lake", str(small_lake.home)],
                 ["sql", "--lake", str(small_lake.home), q, "--format", "csv"]):
        rc, out, _ = run(argv, capsys)
        assert (rc, out) == (0, "n\n2\n"), argv


def test_unknown_campaign_is_an_error(small_lake, capsys):
    rc, out, err = run(["report", "nope", "--lake", str(small_lake.home)], capsys)
    assert rc == 2 and out == ""
    assert err == f"error: no campaign 'nope' in the lake at {small_lake.home}; campaigns: c1\n"
    assert not (small_lake.home / "reports").exists()


def test_ingest_missing_path_and_empty_folder(tmp_path, capsys):
    lake = tmp_path / "new_lake"
    rc, _, err = run(["ingest", str(tmp_path / "nowhere"), "--lake", str(lake)], capsys)
    assert rc == 2 and err == f"error: {tmp_path / 'nowhere'}: no such file or folder\n"
    (tmp_path / "empty").mkdir()
    rc, _, err = run(["ingest", str(tmp_path / "empty"), "--lake", str(lake)], capsys)
    assert rc == 2 and err == (f"error: {tmp_path / 'empty'}: no session folder here (a session folder holds "
                               "session.yaml; see README 'Session folders'), and none of its sub-folders is one\n")
    assert not lake.exists()  # checked before anything is created


def test_empty_and_comment_only_queries(small_lake, capsys):
    for q in ("", "  ;", "-- just a comment\n", "/* nothing */ ;"):
        rc, out, err = run(["sql", q, "--lake", str(small_lake.home)], capsys)
        assert rc == 2 and out == "" and err.startswith("error: the query is empty"), (q, err)


def test_sql_errors_are_one_line(small_lake, capsys):
    rc, out, err = run(["sql", "select * from no_such_table", "--lake", str(small_lake.home)], capsys)
    assert rc == 2 and out == "" and err.startswith("SQL error: Catalog Error") and err.count("\n") == 1


# ------------------------------------------------------------------------------------------ output
def test_csv_json_parquet_keep_everything(small_lake, capsys, tmp_path):
    home = str(small_lake.home)
    rc, out, _ = run(["sql", "select session_id, haadf_shape, elements, manifest, content_sha from sessions "
                      "order by 1", "--format", "csv", "--lake", home], capsys)
    assert rc == 0
    back = pl.read_csv(io.StringIO(out))
    assert back["haadf_shape"].to_list() == ["[32, 32]", "[32, 32]"]  # nested columns as JSON text
    assert back["elements"].to_list() == ['["La", "Fe"]'] * 2
    assert back["content_sha"].to_list() == [SHA, SHA]  # 64 characters, never cut
    rc, out, _ = run(["sql", "select * from sessions", "--format", "json", "--lake", home], capsys)
    rows = json.loads(out)
    assert len(rows) == 2 and rows[0]["content_sha"] == SHA and rows[0]["haadf_shape"] == [32, 32]
    target = tmp_path / "s.parquet"
    rc, _, err = run(["sql", "select * from sessions", "--format", "parquet", "--out", str(target), "--lake", home],
                     capsys)
    assert rc == 0 and err == f"wrote 2 rows to {target}\n"
    assert pl.read_parquet(target)["haadf_shape"].to_list() == [[32, 32], [32, 32]]
    rc, _, err = run(["sql", "select 1", "--format", "parquet", "--lake", home], capsys)
    assert rc == 2 and err == "error: --format parquet writes a file: give --out FILE.parquet\n"


def test_table_row_count_limit_and_width(small_lake, capsys):
    home = str(small_lake.home)
    rc, out, _ = run(["sql", "select session_id, content_sha from sessions order by 1", "--lake", home], capsys)
    lines = out.splitlines()
    assert rc == 0 and lines[-1] == "(2 rows)" and SHA in out  # piped: full width, nothing cut
    rc, out, _ = run(["sql", "select session_id from sessions order by 1", "--limit", "1", "--lake", home], capsys)
    assert out.splitlines()[-1] == "(1 of 2 rows shown (--limit N shows more, --limit 0 all))"
    assert len(out.splitlines()) == 4
    frame = pl.DataFrame({f"column_{i}": [SHA] for i in range(20)})
    text = render_table(frame, 100)  # a 100-column terminal
    assert max(len(x) for x in text.splitlines()[:3]) <= 100
    assert "(1 row; 18 more columns not shown at this width: column_2, column_3" in text
    assert "..." in text.splitlines()[2]  # cells longer than the room are cut on a terminal only
    assert render_table(frame, None).splitlines()[2].count(SHA) == 20


def test_many_rows_default_limit(tmp_path, capsys):
    lake = Lake(tmp_path / "lake").ensure()
    rc, out, _ = run(["sql", "select range as i from range(1000)", "--lake", str(lake.home)], capsys)
    assert out.splitlines()[-1] == "(200 of 1000 rows shown (--limit N shows more, --limit 0 all))"
    rc, out, _ = run(["sql", "select range as i from range(1000)", "--limit", "0", "--lake", str(lake.home)],
                     capsys)
    assert out.splitlines()[-1] == "(1000 rows)"
    rc, out, _ = run(["sql", "select range as i from range(1000)", "--format", "csv", "--lake", str(lake.home)],
                     capsys)
    assert len(out.splitlines()) == 1001  # csv / json: every row


# ------------------------------------------------------------------------------------ failed sessions
def test_registration_failure_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    folder = write_manifest(tmp_path / "s" / "nofield", campaign=None)
    rc, out, err = run(["ingest", str(folder), "--lake", str(tmp_path / "lake")], capsys)
    assert rc == 1 and out == "0 session(s) ingested, 0 unchanged, 1 failed\n"
    last = err.splitlines()[-1]
    assert last.startswith("FAILED ") and ": registration: " in last and "missing required field 'campaign'" in last
    assert "Traceback" not in err


def test_failed_run_one_line_no_trace_and_partition_keys_removed(tmp_path, capsys, monkeypatch):
    """A session whose grids cannot be registered: its run fails; the user sees progress lines and, at
    the end, exactly `FAILED <session>: raw_session: <problem>`; no Dagster stack trace; the pair's
    sample / dose keys leave Dagster's dynamic partitions (no other session uses them)."""
    from dagster import DagsterInstance

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    folder = make_tiny_session(tmp_path / "s" / "grid", sample="grid", haadf_shape=(32, 32), eds_shape=(24, 24),
                               dose_dpa=7)
    rc, out, err = run(["ingest", str(folder), "--lake", str(tmp_path / "lake")], capsys)
    assert rc == 1 and out == "0 session(s) ingested, 0 unchanged, 1 failed\n"
    assert err.splitlines()[-1] == (
        f"FAILED {sid('grid', dose=7)}: raw_session: HAADF grid (32, 32) and EDS grid (24, 24) cannot be registered: "
        "they are neither equal nor an integer binning factor apart; crop or re-bin one of them so the scan grids "
        "match")
    assert "Traceback" not in err and "SessionError" not in err and "dagster - " not in err
    assert err.count("FAILED") == 1
    inst = DagsterInstance.get()
    assert "test.grid" not in inst.get_dynamic_partitions("sample")
    assert "7" not in inst.get_dynamic_partitions("dose")
    # --verbose: Dagster's own log with the trace, and still the one line at the end
    rc, _, err = run(["--verbose", "ingest", str(folder), "--lake", str(tmp_path / "lake")], capsys)
    assert rc == 1 and "Stack Trace:" in err and 'File "' in err
    assert err.splitlines()[-1].startswith(f"FAILED {sid('grid', dose=7)}: raw_session: HAADF grid (32, 32)")


def test_progress_lines_plain_when_piped_and_bars_on_a_terminal():
    from assets.runner import StepLines

    def emit(handler, msg, level=logging.INFO, step="chips"):
        handler.emit(logging.makeLogRecord({"msg": msg, "levelno": level, "dagster_meta": {
            "dagster_event": None, "orig_message": msg, "step_key": step}}))

    pipe, tty = StepLines(io.StringIO(), tty=False), StepLines(io.StringIO(), tty=True)
    for h in (pipe, tty):
        for k in (1, 2):
            emit(h, f"s@0~1: summed EDS chip rows {k}/2")
        emit(h, "Dependencies for step x failed: ['chips']. Not executing.", logging.WARNING)
    assert pipe.stream.getvalue() == ("  chips: s@0~1: summed EDS chip rows 1/2\n"
                                      "  chips: s@0~1: summed EDS chip rows 2/2\n")
    bar = tty.stream.getvalue()
    assert bar.startswith("\r\x1b[K  chips: s@0~1: summed EDS chip rows [") and bar.endswith("] 2/2\n")


# ------------------------------------------------------------------------------------------ encoder options
def test_encoder_options_from_config_and_command_line(tmp_path, monkeypatch):
    from resources.encoder import encoder_resource

    monkeypatch.delenv("MMLAKE_CONFIG", raising=False)
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "config.yaml").write_text("encoder:\n  device: cpu\n  batch_size: 64\n  vgg16_weights: /w/vgg16.pth\n")
    enc = encoder_resource(None, lake)
    assert (enc.device, enc.batch_size, enc.vgg16_weights, enc.precision) == ("cpu", 64, "/w/vgg16.pth", "fp32")
    enc = encoder_resource(None, lake, batch_size=8, haadf_encoders="fft")
    assert (enc.device, enc.batch_size, enc.haadf_encoders) == ("cpu", 8, ["fft"])
    other = tmp_path / "other.yaml"
    other.write_text("encoder: {weights: /w/vgg16.pth}\n")
    monkeypatch.setenv("MMLAKE_CONFIG", str(other))  # what `make ui` and the CLI read when set
    with pytest.raises(Exception, match=r"unknown encoder option 'weights'; known: .*vgg16_weights"):
        encoder_resource(None, lake)


def test_bad_config_file_is_one_line_error(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("encoder:\n  device: gpu\n")
    session = make_tiny_session(tmp_path / "s" / "ok", sample="ok")
    rc, _, err = run(["ingest", str(session), "--config", str(cfg), "--lake", str(tmp_path / "lake")], capsys)
    assert rc == 2 and err.splitlines()[-1] == (
        f"error: config file {cfg}: encoder option 'device' must be one of auto|cpu|cuda, got 'gpu'")


def test_cli_encoder_flags_reach_the_resource(tmp_path):
    import argparse

    from assets.cli import encoder_from_args

    args = argparse.Namespace(config=None, device="cpu", batch_size=16, precision=None, encoders="fft,vgg16",
                              vgg16_weights="random", effnet_weights=None, ssl_weights=None)
    enc = encoder_from_args(args, Lake(tmp_path / "nolake"))
    assert (enc.device, enc.batch_size, enc.haadf_encoders, enc.vgg16_weights) == ("cpu", 16, ["fft", "vgg16"],
                                                                                   "random")


def test_vgg16_message_names_the_real_options(tmp_path, monkeypatch):
    from mmlake.encoders.vgg16 import VGG16Encoder, WeightsUnavailableError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsUnavailableError) as info:
        VGG16Encoder(weights="imagenet")
    msg = str(info.value)
    assert "--vgg16-weights /path/to/vgg16.pth" in msg and "`vgg16_weights: /path/to/vgg16.pth` under `encoder:`" in msg
    assert "`weights:" not in msg


# ------------------------------------------------------------------------------------------ quiet, data
def test_no_hyperspy_deprecation_warnings_on_import():
    code = ("import warnings; warnings.simplefilter('default'); import mmlake, hyperspy.api, exspy; "
            "import assets.definitions")
    res = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "VisibleDeprecationWarning" not in res.stderr and "Importing `" not in res.stderr, res.stderr


def test_shipped_crystal_excerpt():
    from mmlake.crystal.structures import DEFAULT_DATA, load_structures

    assert DEFAULT_DATA == REPO / "mmlake" / "data" / "mp20_demo"
    assert (DEFAULT_DATA / "LICENSE-cdvae").read_text().startswith("MIT License")
    assert sum(f.stat().st_size for f in DEFAULT_DATA.iterdir()) < 2_000_000
    ss = load_structures(DEFAULT_DATA)
    assert len(ss.frame) == 93 and ss.n_skipped == 0
    assert ss.summary()["splits"] == {"train": 64, "val": 12, "test": 17}
    assert len(ss.summary()["crystal_systems"]) == 7


def test_crystal_wrong_path_is_one_line(tmp_path, capsys):
    rc, out, err = run(["crystal", str(tmp_path / "mp_20"), "--lake", str(tmp_path / "lake")], capsys)
    assert rc == 2 and out == "" and err == (
        f"error: {tmp_path / 'mp_20'}: no such file or folder (give a CDVAE-layout CSV, or a folder of "
        "train.csv / val.csv / test.csv)\n")
    assert not (tmp_path / "lake").exists()


def test_installed_command_exit_codes(tmp_path):
    """The real entry point: exit status and stderr as a shell sees them."""
    res = cli("sql", "select 1", "--lake", str(tmp_path / "none"))
    assert res.returncode == 2 and res.stdout == "" and res.stderr.startswith("error: no lake at ")
    res = cli("ingest", str(tmp_path / "none"))
    assert res.returncode == 2 and res.stderr == f"error: {tmp_path / 'none'}: no such file or folder\n"
