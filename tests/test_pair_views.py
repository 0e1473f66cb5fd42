"""The per sample x dose views report core-chip figures by default (issue 13: regions that do not bleed).

Rows are written by hand into a real lake so the expected means are known exactly: two acquisitions
of one sample x dose, whose whole-region and core figures differ, so a view reading the wrong column
gives a different number.
"""

import pytest

from mmlake.lake import Lake

SAMPLE = ("demo", "pristine", 0.1, "0.1")


def _sessions(con, sids):
    for sid in sids:
        con.execute("insert into sessions (session_id, campaign, sample, dose_dpa, dose_key, sample_key, "
                    "materialization_id) values (?, ?, ?, ?, ?, 'demo.pristine', 'm')", [sid, *SAMPLE])


@pytest.fixture
def lake(tmp_path):
    return Lake(tmp_path / "lake").ensure()


def test_shift_by_pair_uses_core_figures(lake):
    with lake.connect() as con:
        _sessions(con, ["a", "b"])
        for sid, whole, core in (("a", 2.0, 5.0), ("b", 4.0, 7.0)):
            con.execute("insert into ordered_disordered_shift (session_id, method, modality, element, percent_diff, "
                        "percent_diff_core, percent_diff_renorm, percent_diff_renorm_core, materialization_id) "
                        "values (?, 'fewshot', 'ensemble', 'O', ?, ?, ?, ?, 'm')", [sid, whole, core, whole, core])
    r = lake.query("select * from shift_by_pair").to_dicts()
    assert len(r) == 1
    r = r[0]
    assert r["basis"] == "core" and r["n_acquisitions"] == 2
    assert r["percent_diff_mean"] == pytest.approx(6.0) and r["percent_diff_whole_mean"] == pytest.approx(3.0)
    assert r["percent_diff_min"] == pytest.approx(5.0) and r["percent_diff_max"] == pytest.approx(7.0)
    assert r["percent_diff_renorm_mean"] == pytest.approx(6.0)
    assert r["percent_diff_sd"] == pytest.approx(2 ** 0.5)
    with lake.connect() as con:  # one acquisition without a core: the pair falls back to whole regions
        con.execute("update ordered_disordered_shift set percent_diff_core = NULL where session_id = 'b'")
    r = lake.query("select * from shift_by_pair").to_dicts()[0]
    assert r["basis"] == "whole" and r["percent_diff_mean"] == pytest.approx(3.0)


def test_role_composition_by_pair_weights_core_chips(lake):
    with lake.connect() as con:
        _sessions(con, ["a", "b"])
        # session a: two film_ordered regions; region 0 has 10 chips (4 core), region 1 has 30 chips (6 core)
        regions = [("a", 0, 10, 4), ("a", 1, 30, 6), ("b", 0, 20, 0)]
        for sid, region, n, n_core in regions:
            con.execute("insert into regions (session_id, method, modality, region, role, n_chips, n_core_chips, "
                        "materialization_id) values (?, 'fewshot', 'eds', ?, 'film_ordered', ?, ?, 'm')",
                        [sid, region, n, n_core])
        comp = [("a", 0, 60.0, 62.0), ("a", 1, 58.0, 61.0), ("b", 0, 59.0, None)]
        for sid, region, whole, core in comp:
            con.execute("insert into region_composition (session_id, method, modality, region, element, "
                        "atomic_percent, atomic_percent_core, materialization_id) "
                        "values (?, 'fewshot', 'eds', ?, 'O', ?, ?, 'm')", [sid, region, whole, core])
    r = lake.query("select * from role_composition_by_pair").to_dicts()
    assert len(r) == 1
    r = r[0]
    a_core = (62.0 * 4 + 61.0 * 6) / 10  # 61.4, core-chip weighted
    a_whole = (60.0 * 10 + 58.0 * 30) / 40  # 58.5
    b = 59.0  # no core chips: whole figure
    assert r["basis"] == "core+whole" and r["n_acquisitions"] == 2
    assert r["atomic_percent_mean"] == pytest.approx((a_core + b) / 2)
    assert r["atomic_percent_whole_mean"] == pytest.approx((a_whole + b) / 2)
