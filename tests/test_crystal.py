"""Crystal campaign (mmlake.crystal): XRD physics, smearing, CLIP loss, loading errors, tiny training.

Reads the shared MP-20 excerpt by path (../shared/data/mp20_excerpt); tests that need it are skipped
when it is absent. Everything here runs in well under a minute on 2 busy cores.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import duckdb

from mmlake.lake import apply_schema
import numpy as np
import polars as pl
import pytest

from mmlake.crystal.structures import DEFAULT_DATA, load_structures
from tests.shared_data import needs_shared_data

TRAIN_CSV = DEFAULT_DATA / "train.csv"
needs_data = needs_shared_data(TRAIN_CSV.exists(), str(TRAIN_CSV))
TINY = dict(epochs=6, batch_size=32, lr=3e-3, emb_dim=16, hidden=32, xrd_channels=(4, 4, 8, 8, 8), seed=7)


def nacl():
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


# ------------------------------------------------------------------------------------------ XRD
def test_nacl_200_peak_position():
    from mmlake.crystal.xrd import XRDParams, pattern_from_structure, stick_pattern

    pat = stick_pattern(nacl())
    fam = {tuple(sorted(abs(v) for v in h["hkl"])): x for x, hs in zip(pat.x, pat.hkls) for h in hs}
    # Bragg, Cu K-alpha (1.54184 Å): d200 = 2.82 Å -> 2theta = 2 asin(1.54184 / 5.64) = 31.73 deg
    assert fam[(0, 0, 2)] == pytest.approx(31.7, abs=0.1)
    assert fam[(0, 0, 2)] == pytest.approx(2 * math.degrees(math.asin(1.54184 / 5.64)), abs=0.01)
    smeared, info = pattern_from_structure(nacl())
    grid = XRDParams().grid()
    assert grid.shape == (901,) and smeared.shape == (901,) and smeared.dtype == np.float32
    assert smeared.max() == pytest.approx(1.0)
    assert grid[np.argmax(smeared)] == pytest.approx(31.7, abs=0.1)  # (200) is rock salt's strongest line
    assert info["strongest_hkl"] == "(2 0 0)"
    assert 0 < info["edge_loss_fraction"] < 0.01  # (511)/(333) at 90.5 deg: half its Gaussian is off the grid


def test_smearing_preserves_integrated_intensity():
    from mmlake.crystal.xrd import XRDParams, pattern_from_structure, smear

    rng = np.random.default_rng(0)
    x, y = rng.uniform(5, 85, 200), rng.uniform(0.1, 100, 200)
    for step in (0.1, 0.25):
        grid = np.linspace(0, 90, int(round(90 / step)) + 1)
        dens = smear(x, y, grid, 0.3)
        assert dens.sum() * step == pytest.approx(y.sum(), rel=0.01)
    _, info = pattern_from_structure(nacl())
    assert info["integrated_intensity"] == pytest.approx(info["stick_intensity"], rel=0.01)
    # a stick at the 90-deg edge keeps only the half of its Gaussian that lies on the grid (documented)
    grid = XRDParams().grid()
    assert np.trapezoid(smear(np.array([90.0]), np.array([1.0]), grid, 0.3), grid) == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="step_deg"):
        XRDParams(step_deg=0.5)


# ------------------------------------------------------------------------------------------ CLIP loss
def test_clip_loss_hand_checked_3x3():
    import torch

    from mmlake.crystal.models import clip_loss

    z1 = torch.eye(3)
    z2 = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    # cosine matrix S[i, j] = cos(z1_i, z2_j) = [[1, 1/sqrt2, 0], [0, 1/sqrt2, 0], [0, 0, 1]]; tau = 0.5
    # -> S / tau = [[2, r, 0], [0, r, 0], [0, 0, 2]] with r = sqrt(2)
    r = math.sqrt(2.0)
    # Eq. 1 as printed: denominators over j != i (negatives only), the two directions summed
    rows = (2 - math.log(math.exp(r) + math.exp(0))) + (r - math.log(math.exp(0) + math.exp(0))) + (2 - math.log(1 + 1))
    cols = (2 - math.log(1 + 1)) + (r - math.log(math.exp(r) + 1)) + (2 - math.log(1 + 1))
    eq1 = -(rows + cols) / 3
    assert eq1 == pytest.approx(-1.5973892782, abs=1e-9)
    assert float(clip_loss(z1, z2, 0.5, "eq1")) == pytest.approx(eq1, abs=1e-5)
    # CLIP (Radford et al.): softmax over all j, the two directions averaged
    rows = (2 - math.log(math.exp(2) + math.exp(r) + 1)) + (r - math.log(1 + math.exp(r) + 1)) + (2 - math.log(2 + math.exp(2)))
    cols = (2 - math.log(math.exp(2) + 2)) + (r - math.log(2 * math.exp(r) + 1)) + (2 - math.log(2 + math.exp(2)))
    clip = -(rows + cols) / 6
    assert clip == pytest.approx(0.4081097981, abs=1e-9)
    assert float(clip_loss(z1, z2, 0.5, "clip")) == pytest.approx(clip, abs=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        clip_loss(z1[:1], z2[:1], 0.5, "eq1")


# ------------------------------------------------------------------------------------------ loading
def _write_csv(path: Path, frame: pl.DataFrame) -> Path:
    frame.write_csv(path)
    return path


@needs_data
def test_bad_cif_reported_and_skipped(tmp_path):
    df = pl.read_csv(TRAIN_CSV, infer_schema_length=0).head(3)
    df = df.with_columns(pl.when(pl.int_range(pl.len()) == 1).then(pl.lit("data_broken\n_cell_length_a oops\n"))
                         .otherwise(pl.col("cif")).alias("cif"))
    bad_id = df["material_id"][1]
    ss = load_structures(_write_csv(tmp_path / "train.csv", df))
    assert len(ss.frame) == 2 and ss.n_skipped == 1
    row, mid, reason = ss.skipped[0]
    assert (row, mid) == (1, bad_id) and "train.csv" in reason
    assert bad_id not in ss.frame["material_id"].to_list()
    t = ss.table("t")
    assert t.filter(pl.col("skip_reason").is_not_null())["material_id"].to_list() == [bad_id]
    assert set(ss.frame["split"]) == {"train"}


def test_empty_csv_is_a_clear_error(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_structures(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text(",material_id,formation_energy_per_atom,cif\n")
    with pytest.raises(ValueError, match="empty"):
        load_structures(tmp_path / "header.csv")


@needs_data
def test_missing_target_column_flags_task_and_rest_runs(tmp_path):
    from mmlake.crystal.benchmark import run_benchmark
    from mmlake.crystal.composition import composition_features
    from mmlake.crystal.train import assemble, train_model
    from mmlake.crystal.xrd import simulate_patterns

    df = pl.read_csv(TRAIN_CSV, infer_schema_length=0).head(24).drop("formation_energy_per_atom")
    ss = load_structures(_write_csv(tmp_path / "no_energy.csv", df))  # not train/val/test -> hashed split
    assert ss.tasks["formation_energy"] is not None and "unavailable" in ss.tasks["formation_energy"]
    assert all(ss.tasks[t] is None for t in ("lattice_lengths", "lattice_angles", "crystal_system"))
    assert ss.frame["energy_target"].null_count() == len(ss.frame)
    assert set(ss.frame["split"]) <= {"train", "val", "test"} and (ss.frame["split"] == "train").sum() >= 2
    arr = assemble(ss.frame, simulate_patterns(ss.frame), composition_features(ss.frame), energy_available=False)
    m = train_model(arr, "composition", {**TINY, "epochs": 2})
    assert m.params["w_energy"] == 0.0
    arr.split[:] = np.where(np.arange(len(arr.split)) % 3 == 0, "test", arr.split)
    res = run_benchmark({"composition": m}, arr)
    row = res.summary.filter(pl.col("variant") == "composition").row(0, named=True)
    assert row["energy_mae"] is None and row["lengths_mae"] > 0


# ------------------------------------------------------------------------------------------ composition
def test_composition_features_and_missing_element_data():
    from mmlake.crystal.composition import FEATURE_NAMES, composition_features

    f = pl.DataFrame({"material_id": ["nacl", "he"], "split": ["train", "train"], "formula": ["NaCl", "Na2He"]})
    cf = composition_features(f)
    assert cf.features.shape == (2, len(FEATURE_NAMES)) and np.isfinite(cf.features).all()
    i = FEATURE_NAMES.index("mean_Electronegativity")
    assert cf.features[0, i] == pytest.approx((0.93 + 3.16) / 2, abs=1e-4)
    assert cf.features[0, FEATURE_NAMES.index("range_Number")] == pytest.approx(6.0)
    missing = {(m, e, p) for m, e, p, _, _ in cf.imputed}
    assert ("he", "He", "Electronegativity") in missing and all(m == "he" for m, _, _ in missing)
    skipped = composition_features(f, missing="skip")
    assert len(skipped.frame) == 1 and skipped.skipped[0][0] == "he"


def test_reference_spacings_perovskites():
    from mmlake.crystal.reference import reference_spacings

    df = reference_spacings(("LaFeO3", "SrTiO3"))
    d = {(r["phase"], r["hkl"]): r["d_ang"] for r in df.iter_rows(named=True)}
    assert d[("LaFeO3", "(1 0 0)")] == pytest.approx(3.93, abs=1e-6)
    assert d[("LaFeO3", "(1 1 0)")] == pytest.approx(3.93 / math.sqrt(2), abs=1e-6)
    assert d[("SrTiO3", "(1 1 0)")] == pytest.approx(2.7613, abs=1e-3)
    assert d[("SrTiO3", "(2 0 0)")] == pytest.approx(1.9525, abs=1e-6)


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny():
    from mmlake.crystal.pipeline import composition_features_stage, xrd_patterns_stage

    ss = load_structures(TRAIN_CSV, limit=64)
    return ss, xrd_patterns_stage(ss), composition_features_stage(ss)


@needs_data
def test_tiny_training_lowers_loss_and_is_deterministic(tiny):
    from mmlake.crystal.models import model_from_bytes
    from mmlake.crystal.train import assemble, predict, train_model

    ss, xrd, comp = tiny
    assert len(ss.frame) == 64 and xrd.patterns.shape == (64, 901)
    arr = assemble(ss.frame, xrd, comp)
    arr.split[48:] = "val"
    a = train_model(arr, "fused", TINY)
    b = train_model(arr, "fused", TINY)
    first, last = a.history[0]["loss"], min(h["loss"] for h in a.history[-2:])
    assert last < first, (first, last)
    assert all(h["clip"] != 0 for h in a.history)
    assert a.sha256 == b.sha256 and a.weights == b.weights
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    c = train_model(arr, "fused", {**TINY, "seed": 8})
    assert c.sha256 != a.sha256
    # weights round-trip through bytes
    idx = np.arange(48, 64)
    p1 = predict(a.model, arr, idx)
    p2 = predict(model_from_bytes(a.weights), arr, idx)
    np.testing.assert_allclose(p1["lengths"], p2["lengths"], rtol=1e-6)


@needs_data
def test_stage_tables_fit_the_ddl(tiny):
    from mmlake.crystal.benchmark import PREPRINT_TABLE2
    from mmlake.crystal.pipeline import (crystal_benchmark_stage, crystal_encoders_stage,
                                         crystal_reference_spacings_stage)
    from mmlake.crystal.reference import reference_table
    from mmlake.crystal.structures import structures_from_table
    from mmlake.crystal.xrd import XRDPatterns
    from mmlake.crystal.composition import CompositionFeatures

    ss, xrd, comp = tiny
    ss = dataclasses.replace(ss, frame=ss.frame.with_columns(
        pl.when(pl.int_range(pl.len()) >= 48).then(pl.lit("test")).otherwise(pl.col("split")).alias("split")))
    params = {"train": {**TINY, "epochs": 2}, "variants": ["xrd", "fused"]}
    enc = crystal_encoders_stage(ss, xrd, comp, "cpu", params)
    bm = crystal_benchmark_stage(ss, xrd, comp, enc, "cpu", params)
    assert set(bm.summary["variant"]) == {"baseline", "xrd", "fused"}
    assert bm.side_by_side.height == 3 + PREPRINT_TABLE2.height
    con = duckdb.connect()
    apply_schema(con)  # the lake schema, as every write connection applies it
    frames = {
        "structures": ss.table("t"), "xrd_patterns": xrd.table("t", "0" * 64),
        "composition_features": comp.table("t"), "composition_feature_names": comp.names_table("t"),
        "crystal_models": enc.table("t"), "crystal_benchmark": bm.table("t"),
        "crystal_reference_spacings": reference_table(crystal_reference_spacings_stage(ss), "t"),
    }
    for name, frame in frames.items():
        con.register("_f", frame.with_columns(pl.lit("m1").alias("materialization_id")).to_arrow())
        con.execute(f"insert into {name} by name select * from _f")
        con.unregister("_f")
        assert con.execute(f"select count(*) from {name}").fetchone()[0] == len(frame)
    # read back: the stage inputs rebuild from the lake tables
    back = structures_from_table(con.execute("select * from structures").pl())
    assert back.frame["material_id"].to_list() == ss.frame["material_id"].to_list()
    x2 = XRDPatterns.from_table(con.execute("select * from xrd_patterns").pl(), xrd.patterns)
    assert x2.frame["material_id"].to_list() == xrd.frame["material_id"].to_list()
    c2 = CompositionFeatures.from_table(con.execute("select * from composition_features").pl())
    np.testing.assert_allclose(c2.features, comp.features)
    from mmlake.crystal.pipeline import encoders_from_table

    enc2 = encoders_from_table(con.execute("select * from crystal_models").pl(),
                               {m.sha256: m.weights for m in enc.models.values()})
    bm2 = crystal_benchmark_stage(back, x2, c2, enc2, "cpu", params)
    assert bm2.rows.drop("value").equals(bm.rows.drop("value"))
    np.testing.assert_allclose(bm2.rows["value"].fill_null(-1).to_numpy(), bm.rows["value"].fill_null(-1).to_numpy(),
                               rtol=1e-5)
    v = con.execute("select f.features[p.position] from composition_features f join composition_feature_names p "
                    "using (dataset) where p.feature = 'mean_Number' limit 1").fetchone()[0]
    assert v == pytest.approx(float(comp.features[0, 0]))
