"""Session identity: acquisitions and campaigns side by side, no silent replacement, truthful provenance."""

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from assets.runner import ingest
from mmlake.errors import LakeError
from mmlake.lake import Lake, Provenance
from tests.sessions import make_tiny_session, sid, write_manifest

REPO = Path(__file__).resolve().parent.parent
quiet = {"progress": lambda m: None, "log_level": "WARNING"}


def table_counts(lake, session_id):
    return {t: lake.query(f"select count(*) as n from {t} where session_id = ?", [session_id])["n"][0]
            for t in ("sessions", "chips", "haadf_embeddings", "segment_labels", "regions", "agreement")}


def test_two_acquisitions_of_one_pair_coexist(tmp_path, lake, instance):
    a = make_tiny_session(tmp_path / "a", sample="film", seed=1, acquisition="map1")
    b = make_tiny_session(tmp_path / "b", sample="film", seed=2, acquisition="map2")
    out = ingest([a, b], lake, instance, **quiet)
    assert [o.ok for o in out] == [True, True], out
    ids = [sid("film", acquisition="map1"), sid("film", acquisition="map2")]
    assert sorted(o.session_id for o in out) == ids
    for s in ids:  # both chipped, embedded, segmented and described under their own id
        counts = table_counts(lake, s)
        assert counts["sessions"] == 1 and counts["chips"] == 16, counts
        assert counts["segment_labels"] > 0 and counts["regions"] > 0, counts
    # one partition, one materialization per asset covering both sessions
    m = lake.query("select asset_key, partition_key, session_ids from materializations where is_current")
    assert set(m["partition_key"]) == {"0|test.film"}
    assert all(sorted(x) == ids for x in m["session_ids"].to_list())
    assert len(instance.get_runs()) == 1  # one run for the pair
    # different data per acquisition (not one copy twice)
    means = lake.query("select session_id, avg(haadf_mean) as m from chips group by 1 order by 1")["m"].to_list()
    assert means[0] != means[1]


def test_same_sample_in_two_campaigns(tmp_path, lake, instance):
    a = make_tiny_session(tmp_path / "a", sample="pristine", campaign="LFO 2023", seed=3)
    b = make_tiny_session(tmp_path / "b", sample="pristine", campaign="LFO 2024", seed=4)
    out = ingest([a, b], lake, instance, **quiet)
    assert all(o.ok for o in out), out
    cat = lake.query("select campaign, sample_key, session_id from session_catalog order by 1")
    assert cat["campaign"].to_list() == ["LFO 2023", "LFO 2024"]
    assert cat["sample_key"].to_list() == ["lfo-2023.pristine", "lfo-2024.pristine"]
    for s in cat["session_id"]:
        assert table_counts(lake, s)["regions"] > 0
    # the example query compares them side by side (needs an ordered/disordered shift; the tiny noise
    # sessions may have none, so the query must at least run and name only these campaigns)
    sql = (REPO / "sql" / "queries" / "same_sample_across_campaigns.sql").read_text()
    res = lake.query(sql)
    assert set(res["campaign"].to_list()) <= {"LFO 2023", "LFO 2024"}
    pairs = lake.query("select campaign, count(*) as n from regions join sessions using (session_id) group by 1 order by 1")
    assert pairs["campaign"].to_list() == ["LFO 2023", "LFO 2024"]


def test_identical_reingest_from_another_folder_writes_nothing(tmp_path, lake, instance):
    a = make_tiny_session(tmp_path / "a", sample="same")
    assert ingest([a], lake, instance, **quiet)[0].ok
    before = lake.query("select materialization_id, data_version from materializations order by 1")
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(a, copy)
    out = ingest([copy], lake, instance, **quiet)
    assert out[0].ok and out[0].message == "unchanged", out
    after = lake.query("select materialization_id, data_version from materializations order by 1")
    assert before.equals(after)  # no new ledger row, same data versions
    assert len(instance.get_runs()) == 1  # no second run at all
    ev = lake.query("select event from session_events where session_id = ? order by event_at", [sid("same")])
    assert ev["event"].to_list() == ["registered"]  # identical content writes nothing, not even an event
    assert lake.query("select folder from session_sources")["folder"].to_list() == [str(a.resolve())]


def test_changed_content_is_refused_then_replaced_with_history(tmp_path, lake, instance):
    a = make_tiny_session(tmp_path / "a", sample="changed", seed=1)
    assert ingest([a], lake, instance, **quiet)[0].ok
    s = sid("changed")
    old_chips = lake.query("select * from chips where session_id = ? order by chip_index", [s])
    b = make_tiny_session(tmp_path / "b", sample="changed", seed=2)  # same identity, other data
    out = ingest([b], lake, instance, **quiet)
    assert not out[0].ok
    msg = out[0].message
    assert s in msg and str(a.resolve()) in msg and str(b.resolve()) in msg and "--replace" in msg, msg
    assert lake.query("select * from chips where session_id = ? order by chip_index", [s]).equals(old_chips)
    out = ingest([b], lake, instance, replace=True, **quiet)
    assert out[0].ok, out
    new_chips = lake.query("select * from chips where session_id = ? order by chip_index", [s])
    assert len(new_chips) == 16 and not new_chips["haadf_mean"].equals(old_chips["haadf_mean"])
    hist = lake.query("select * from history.chips where session_id = ? order by chip_index", [s])
    assert hist.drop("replaced_by", "replaced_at").equals(old_chips)  # the replaced rows, intact
    assert set(hist["replaced_by"]) == set(new_chips["materialization_id"])
    ev = lake.query("select event from session_events where session_id = ? order by event_at", [s])["event"].to_list()
    assert ev == ["registered", "refused", "replaced"]
    assert lake.query("select count(*) as n from sessions where session_id = ?", [s])["n"][0] == 1


def test_started_before_finished_and_weights_in_version(tmp_path, lake, instance):
    a = make_tiny_session(tmp_path / "a", sample="timing")
    assert ingest([a], lake, instance, **quiet)[0].ok
    m = lake.query("select asset_key, epoch(finished_at) - epoch(started_at) as s from materializations")
    assert (m["s"] > 0).all(), m  # started when the computation started, not when rows were written
    base = dict(asset_key="haadf_embeddings", partition_key="p", code_version="v",
                upstream=[{"materialization_id": "x", "data_version": "d"}])
    assert Provenance(**base, weights="vgg16=aaa").data_version != Provenance(**base, weights="vgg16=bbb").data_version
    assert Provenance(**base, weights="fft=none").data_version == Provenance(**base, weights="fft=none").data_version


def test_write_refused_when_an_upstream_was_replaced_after_reading(tmp_path):
    lake = Lake(tmp_path / "lake").ensure()
    frame = pl.DataFrame({"session_id": ["s"], "chip_index": [0], "row": [0], "col": [0], "y0": [0], "x0": [0]})
    up = lake.replace_partition(Provenance("raw_session", "p", "v"), {}, None)
    read = [{"materialization_id": up["materialization_id"], "data_version": up["data_version"]}]
    lake.replace_partition(Provenance("raw_session", "p", "v", parameters={"other": 1}), {}, None)  # another run
    with pytest.raises(LakeError, match="replaced by another run"):
        lake.replace_partition(Provenance("chips", "p", "v", upstream=read), {"chips": frame}, {"session_id": "s"})
    assert lake.query("select count(*) as n from chips")["n"][0] == 0
    assert lake.current("chips", "p") is None


def test_code_version_follows_the_code(tmp_path, monkeypatch):
    from mmlake import codeversion

    pkg = tmp_path / "tmpproj"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "science.py").write_text("def d_spacing(x):\n    return x / 2\n")
    (pkg / "asset.py").write_text("from tmpproj.science import d_spacing\n\ndef my_asset():\n    return d_spacing(4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(codeversion, "PROJECT_PACKAGES", ("tmpproj",))

    def version():
        codeversion._imports.cache_clear()
        for m in [m for m in sys.modules if m.startswith("tmpproj")]:
            del sys.modules[m]
        return codeversion.module_code_version("tmpproj.asset", "my_asset")

    v1 = version()
    assert version() == v1  # deterministic
    (pkg / "science.py").write_text("def d_spacing(x):\n    return x / 2.0001\n")  # edit the called function
    v2 = version()
    assert v2 != v1 and v2.startswith("my_asset-")
    # and the deployed session assets carry derived versions, not hand-kept constants
    from assets.definitions import SESSION_ASSETS

    versions = [v for a in SESSION_ASSETS for v in a.code_versions_by_key.values()]
    assert all(v and len(v.rsplit("-", 1)[1]) == 12 for v in versions), versions


def test_the_import_scan_finds_what_a_parse_finds_in_every_project_module():
    """Code versions use a line scan for imports (a parse of every module cost ~0.3 s per start);
    on this tree it must resolve exactly the project modules a full `ast` parse resolves."""
    from mmlake import codeversion

    root = Path(codeversion.__file__).resolve().parent.parent
    modules = []
    for pkg in codeversion.PROJECT_PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert len(modules) > 80
    scanned = {m: codeversion._imports.__wrapped__(m) for m in modules}
    parsed = {m: codeversion._imports.__wrapped__(m, scan=codeversion._ast_imports) for m in modules}
    assert scanned == parsed
    assert "mmlake.segment" in scanned["assets.segmentation"]  # not vacuous

    tricky = (
        "import os, mmlake.lake as lk\n"
        "from . import sibling  # comment\n"
        "from ..pkg.mod import (a,  # first\n    b as c,\n)\n"
        "from x import y, \\\n    z\n"
        "def f():\n    from mmlake.eds import lines\n"
    )
    assert sorted(codeversion._scan_imports(tricky)) == sorted(codeversion._ast_imports(tricky))


def test_truth_map_as_hspy(tmp_path, lake, instance):
    import hyperspy.api as hs

    folder = make_tiny_session(tmp_path / "t", sample="truthy")
    labels = np.zeros((32, 32), dtype=np.int16)
    labels[16:] = 1
    hs.signals.Signal2D(labels).save(folder / "truth.hspy", overwrite=True)
    write_manifest(folder, sample="truthy", haadf="haadf.hspy", eds="eds.hspy", chip_px=8, truth="truth.hspy")
    out = ingest([folder], lake, instance, **quiet)
    assert out[0].ok, out
    t = lake.query("select truth_label from chips where session_id = ? order by chip_index", [sid("truthy")])
    assert t["truth_label"].to_list() == [0] * 8 + [1] * 8
    # a float map with fractions names the problem
    hs.signals.Signal2D(labels + 0.5).save(folder / "truth.hspy", overwrite=True)
    write_manifest(folder, sample="truthy2", haadf="haadf.hspy", eds="eds.hspy", chip_px=8, truth="truth.hspy")
    out = ingest([folder], lake, instance, **quiet)
    assert not out[0].ok and "non-integer values" in out[0].message, out


def test_empty_pair_of_the_product_is_skipped(tmp_path, lake, instance):
    """Sessions at (a, 0) and (b, 0.1): the product also holds (a, 0.1) and (b, 0), never acquired."""
    from dagster import MultiPartitionKey, materialize

    from assets.definitions import SESSION_ASSETS, all_resources

    a = make_tiny_session(tmp_path / "a", sample="alpha", dose_dpa=0)
    b = make_tiny_session(tmp_path / "b", sample="beta", dose_dpa=0.1)
    assert all(o.ok for o in ingest([a, b], lake, instance, **quiet))
    n = lake.query("select count(*) as n from materializations")["n"][0]
    res = materialize(SESSION_ASSETS, partition_key=MultiPartitionKey({"sample": "test.alpha", "dose": "0.1"}),
                      instance=instance, resources=all_resources(lake.home), raise_on_error=False)
    assert res.success  # "no session here": not a failure
    assert lake.query("select count(*) as n from materializations")["n"][0] == n  # and nothing written
    skipped = [e for e in res.all_events if e.event_type_value == "STEP_SKIPPED"]
    assert skipped  # downstream steps skipped, not failed


def test_bad_new_acquisition_does_not_block_its_pair(tmp_path, lake, instance):
    good = make_tiny_session(tmp_path / "good", sample="pair", acquisition="m1")
    assert ingest([good], lake, instance, **quiet)[0].ok
    before = table_counts(lake, sid("pair", acquisition="m1"))
    bad = make_tiny_session(tmp_path / "bad", sample="pair", acquisition="m2")
    (bad / "eds.hspy").write_bytes((bad / "eds.hspy").read_bytes()[:2000])
    out = ingest([bad], lake, instance, **quiet)
    assert not out[0].ok and sid("pair", acquisition="m2") in out[0].message
    assert table_counts(lake, sid("pair", acquisition="m1")) == before
    ev = lake.query("select event from session_events where session_id = ?", [sid("pair", acquisition="m2")])
    assert ev["event"].to_list() == ["registered", "failed"]
    # the pair runs again for the good acquisition (the bad one's registration was withdrawn)
    fixed = make_tiny_session(tmp_path / "third", sample="pair", acquisition="m3", seed=5)
    assert ingest([fixed], lake, instance, **quiet)[0].ok
    assert lake.query("select count(*) as n from sessions where partition_key = '0|test.pair'")["n"][0] == 2


V1_ROWS = """
insert into materializations values
 ('m_raw','raw_session','0.1|pristine','pristine@0.1','r1','raw_session-1','dv1','{}',[],'{}',null,null,
  '2024-01-01 00:00:00+00','2024-01-01 00:00:01+00',1,true),
 ('m_chips','chips','0.1|pristine','pristine@0.1','r1','chips-1','dv2','{}',['m_raw'],'{}',null,null,
  '2024-01-01 00:00:01+00','2024-01-01 00:00:02+00',3,true);
insert into session_sources values ('pristine@0.1','LFO demo','pristine','0.1','/gone/folder','abc',
  '2024-01-01 00:00:00+00');
insert into sessions (session_id, campaign, sample, dose_dpa, dose_key, acquired_at, manifest, materialization_id)
  values ('pristine@0.1','LFO demo','pristine',0.1,'0.1','2024-03-11 10:15:00+00',
          '{"campaign": "LFO demo", "sample": "pristine", "dose_dpa": 0.1}','m_raw');
insert into session_files values ('pristine@0.1','haadf','haadf.hspy','f00d',10,'m_raw');
insert into chips (session_id, chip_index, row, col, y0, x0, materialization_id) values
  ('pristine@0.1',0,0,0,0,0,'m_chips'),('pristine@0.1',1,0,1,0,8,'m_chips'),('pristine@0.1',2,1,0,8,0,'m_chips');
insert into regions (session_id, method, modality, region, n_chips, materialization_id)
  values ('pristine@0.1','louvain','eds',0,3,'m_chips');
"""


def test_lake_from_the_previous_schema_upgrades_without_loss(tmp_path):
    home = tmp_path / "old"
    home.mkdir()
    con = duckdb.connect(str(home / "mmlake.duckdb"))
    con.execute((Path(__file__).parent / "data" / "schema_v1.sql").read_text())
    con.execute(V1_ROWS)
    counts = {t: con.execute(f"select count(*) from {t}").fetchone()[0]
              for t in ("materializations", "session_sources", "sessions", "session_files", "chips", "regions")}
    con.close()
    lake = Lake(home)
    with pytest.raises(LakeError, match="mmlake migrate"):  # read-only on an old lake: says what to do
        lake.query("select 1")
    lake = Lake(home).ensure()  # the first write connection upgrades in place
    new_id = "lfo-demo.pristine@0.1~20240311T101500"
    for t, n in counts.items():
        assert lake.query(f"select count(*) as n from {t}")["n"][0] == n, t
        if t != "materializations":
            assert set(lake.query(f"select session_id from {t}")["session_id"]) == {new_id}, t
    m = lake.query("select partition_key, session_ids from materializations")
    assert set(m["partition_key"]) == {"0.1|lfo-demo.pristine"}
    assert all(x == [new_id] for x in m["session_ids"].to_list())
    s = lake.query("select sample_key, acquisition, partition_key, content_sha from sessions").to_dicts()[0]
    assert s["sample_key"] == "lfo-demo.pristine" and s["acquisition"] == "20240311T101500"
    assert s["partition_key"] == "0.1|lfo-demo.pristine" and len(s["content_sha"]) == 64
    assert lake.query("select value from schema_meta where key = 'schema_version'")["value"][0] == "3"
    lin = lake.query("select asset_key from lineage where root_id = 'm_chips' order by depth")
    assert lin["asset_key"].to_list() == ["chips", "raw_session"]  # lineage still walks
    Lake(home).ensure()  # idempotent
    assert lake.query("select count(*) as n from chips")["n"][0] == 3


def test_schema_2_lake_loses_the_ledgers_primary_key_and_nothing_else(tmp_path):
    """2 -> 3: materializations is rebuilt without its PRIMARY KEY (DuckDB rewrote the key's whole index
    at every write's checkpoint); every row, value, column type and NOT NULL survives, and the lake
    takes writes after it."""
    home = tmp_path / "v2"
    home.mkdir()
    con = duckdb.connect(str(home / "mmlake.duckdb"))
    # schema 2 = this schema.sql with the ledger's key (the only difference; git e772af8)
    v2 = (Path(__file__).resolve().parent.parent / "sql" / "schema.sql").read_text()
    ledger = "CREATE TABLE IF NOT EXISTS materializations (\n    materialization_id VARCHAR NOT NULL,"
    assert v2.count(ledger) == 1
    con.execute(v2.replace(ledger, ledger.replace("NOT NULL", "PRIMARY KEY")))
    con.execute("insert into schema_meta values ('schema_version', '2', now())")
    con.execute("insert into materializations by name select 'm' || i as materialization_id, 'chips' as asset_key, "
                "'0|c.s' as partition_key, 'cv' as code_version, 'dv' || i as data_version, ['u' || i] as upstream_ids, "
                "i = 4 as is_current, ['c.s@0~a'] as session_ids, i as row_count from range(5) t(i)")
    def ledger(c):
        return (c.execute("select * from materializations order by materialization_id").fetchall(),
                c.execute("select column_name, data_type, is_nullable from duckdb_columns() where "
                          "table_name = 'materializations' order by column_index").fetchall(),
                c.execute("select constraint_type from duckdb_constraints() where table_name = 'materializations' "
                          "and constraint_type = 'PRIMARY KEY'").fetchall())
    rows, columns, keys = ledger(con)
    con.close()
    assert keys == [("PRIMARY KEY",)] and len(rows) == 5
    lake = Lake(home).ensure()
    with lake.connect() as c:
        after = ledger(c)
        assert c.execute("select value from schema_meta where key = 'schema_version'").fetchone()[0] == "3"
        assert c.execute("select count(*) from duckdb_tables() where table_name like '%materializations%'").fetchone()[0] == 1
    assert after == (rows, columns, [])
    lake.replace_partition(Provenance("chips", "0|c.s", "cv2"), {}, None)
    assert lake.query("select count(*) as n from materializations")["n"][0] == 6


RUNNER = """
import sys
from mmlake.lake import Lake
from assets.runner import ingest, dagster_instance
out = ingest([sys.argv[2]], Lake(sys.argv[1]), dagster_instance(), progress=lambda m: None, log_level="WARNING")
sys.exit(0 if all(o.ok for o in out) else 1)
"""


@pytest.mark.slow
def test_overlapping_ingests_of_one_partition_are_serialised(tmp_path, lake):
    a = make_tiny_session(tmp_path / "a", sample="race", acquisition="m1", seed=1)
    b = make_tiny_session(tmp_path / "b", sample="race", acquisition="m2", seed=2)
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dh"), "PYTHONPATH": str(REPO)}
    (tmp_path / "dh").mkdir()
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dh" / "dagster.yaml")
    procs = [subprocess.Popen([sys.executable, "-c", RUNNER, str(lake.home), str(f)], env=env, cwd=REPO,
                              stderr=subprocess.PIPE, text=True) for f in (a, b)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-3000:] for e in errs]
    runs = lake.query("select run_id, min(started_at) as s, max(finished_at) as f from materializations "
                      "group by 1 order by 2").to_dicts()
    assert len(runs) >= 1
    for first, second in zip(runs, runs[1:]):
        assert first["f"] <= second["s"], runs  # one run of the partition at a time
    # lineage is consistent: every current row's recorded upstream is current and of the same partition
    bad = lake.query("""
        select m.asset_key, u.asset_key as up from materializations m, unnest(m.upstream_ids) as t(uid)
        join materializations u on u.materialization_id = t.uid
        where m.is_current and (not u.is_current or u.partition_key <> m.partition_key)""")
    assert len(bad) == 0, bad
    cur = lake.query("select session_ids from materializations where is_current and asset_key = 'region_descriptors'")
    assert sorted(cur["session_ids"][0]) == [sid("race", acquisition="m1"), sid("race", acquisition="m2")]
