"""Region descriptors, roles, SQL views/queries, pictures, the HTML report and the label-map export.

Synthetic sessions (mmlake.synth) are built in memory, smaller than the demo campaign (fewer EDS
channels, smaller images) so the file stays fast; the ground-truth labels are the segmentation, so
nothing here depends on the segmenters. "Pure" labels keep only the chips that lie entirely inside one
truth class (mixed boundary chips are unassigned, -1): their summed spectra must quantify to the
generator's class composition.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mmlake import synth
from mmlake.chips import ChipGrid, majority_labels, sum_eds_chips
from mmlake.descriptors import (
    EXTRANEOUS,
    describe_session,
    largest_square,
    quantify_region,
    region_descriptors,
)
from mmlake.lake import Lake, Provenance
from mmlake.roles import SHIFT_TABLE, assign_roles, composition_shift, parse_overrides

REPO = Path(__file__).resolve().parent.parent
CAMPAIGN = "descriptor_test"
CLASSES = list(synth.CLASS_NAMES)

# pristine@0.1: amorphised film (no lattice, O-rich, Fe-poor); defective@0: crystalline defect domains
# (0.42 nm, La-poor, O-rich), widened so the largest square inside them spans 4 chips.
SPECS = [
    dataclasses.replace(synth.DEMO_CAMPAIGN[1], image_px=300, n_channels=1024, energy_scale_kev=0.014,
                        campaign=CAMPAIGN),
    dataclasses.replace(synth.DEMO_CAMPAIGN[2], image_px=300, n_channels=1024, energy_scale_kev=0.014,
                        defect_width_fraction=0.25, campaign=CAMPAIGN),
]


def pure_labels(truth: np.ndarray, grid: ChipGrid) -> np.ndarray:
    t = grid.tiles(truth).reshape(grid.n_chips, -1)
    first = t[:, 0]
    return np.where((t == first[:, None]).all(axis=1), first, -1).astype(np.int64)


@dataclasses.dataclass
class Built:
    spec: synth.SessionSpec
    haadf: np.ndarray
    truth: np.ndarray
    grid: ChipGrid
    sums: np.ndarray
    pure: np.ndarray
    majority: np.ndarray
    out: object  # DescriptorTables


PERM = np.array([2, 0, 3, 1])  # "clustering" labels: the truth classes under arbitrary ids


def _segmentations(b_pure, b_major):
    return {("truth", "truth"): b_pure, ("truth", "majority"): b_major, ("truth", "ensemble"): b_major,
            ("agglomerative", "eds"): np.where(b_pure >= 0, PERM[np.maximum(b_pure, 0)], -1)}


@pytest.fixture(scope="module")
def built() -> dict[str, Built]:
    out = {}
    for spec in SPECS:
        haadf, eds, truth = synth.make_arrays(spec)
        grid = ChipGrid.fit(haadf.shape, spec.chip_px)
        sums, _ = sum_eds_chips(eds, grid)
        del eds
        pure, major = pure_labels(truth, grid), majority_labels(truth, grid).astype(np.int64)
        tables = describe_session(
            _segmentations(pure, major), grid, haadf, sums, (spec.energy_offset_kev, spec.energy_scale_kev),
            spec.beam_kv, spec.elements, spec.kfactors, spec.pixel_size_nm, session_id=spec.session_id,
            class_names={"truth": CLASSES})
        out[spec.session_id] = Built(spec, haadf, truth, grid, sums, pure, major, tables)
    return out


def _region(b: Built, method: str, modality: str, role: str) -> dict:
    rows = b.out.regions.filter((pl.col("method") == method) & (pl.col("modality") == modality)
                                & (pl.col("role") == role)).to_dicts()
    assert len(rows) == 1, (method, modality, role, rows)
    return rows[0]


# ------------------------------------------------------------------------------- geometry


def test_largest_square_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(40):
        m = rng.random((rng.integers(1, 12), rng.integers(1, 12))) < rng.uniform(0.4, 0.95)
        side, r, c = largest_square(m)
        best = 0
        for k in range(1, min(m.shape) + 1):
            if any(m[i:i + k, j:j + k].all() for i in range(m.shape[0] - k + 1) for j in range(m.shape[1] - k + 1)):
                best = k
        assert side == best
        if side:
            assert m[r:r + side, c:c + side].all()
    assert largest_square(np.zeros((3, 4), bool)) == (0, -1, -1)
    m = np.zeros((6, 7), bool)
    m[1:4, 2:5] = True
    m[5, :] = True
    assert largest_square(m) == (3, 1, 2)


def test_untile_inverts_tiles():
    g = ChipGrid(4, 3, 5)
    img = np.arange(12 * 20, dtype=np.float32).reshape(12, 20)
    assert np.array_equal(g.untile(g.tiles(img)), img)


# ------------------------------------------------------------------------------- physics vs truth


def test_d_spacing_of_crystalline_regions_matches_generator(built):
    b = built["defective@0"]
    lattice = synth.class_lattice_nm(b.spec)
    seen = {}
    for role in ("substrate", "film_ordered", "film_disordered"):
        for modality in ("truth", "majority"):
            r = _region(b, "truth", modality, role)
            assert r["d_spacing_nm"] is not None, r["d_spacing_note"]
            tol = 0.006 if role == "film_disordered" else 0.002  # defect domains: rotated, column-disordered
            assert abs(r["d_spacing_nm"] - lattice[role]) < tol, (role, modality, r["d_spacing_nm"], lattice[role])
            assert r["d_spacing_se_nm"] is not None and r["d_spacing_ci_low"] <= r["d_spacing_nm"] <= r["d_spacing_ci_high"]
            assert r["superlattice_nm"] is None
            assert 0 < r["d_spacing_unc_nm"] < 0.1 and r["square_px"] >= 45
            seen[(role, modality)] = round(r["d_spacing_nm"], 4)
    ordered = _region(built["pristine@0.1"], "truth", "truth", "film_ordered")
    assert abs(ordered["d_spacing_nm"] - synth.A_LFO) < 0.002
    print("d-spacings (defective@0):", seen, "truth:", lattice)


def test_amorphous_regions_have_null_d_spacing(built):
    b = built["pristine@0.1"]
    assert synth.class_lattice_nm(b.spec)["film_disordered"] is None
    for modality in ("truth", "majority"):
        for role in ("film_disordered", "cap"):
            r = _region(b, "truth", modality, role)
            assert r["d_spacing_nm"] is None and r["d_spacing_unc_nm"] is None
            assert r["d_spacing_note"].startswith("amorphous"), r["d_spacing_note"]
            assert r["lattice_strength"] < 0
        assert _region(b, "truth", modality, "film_disordered")["crystallinity"] < 0.2
        assert _region(b, "truth", modality, "film_ordered")["crystallinity"] > 0.8


def test_region_compositions_match_generator(built):
    worst = 0.0
    for b in built.values():
        truth = synth.class_composition(b.spec)
        comp = b.out.region_composition.filter((pl.col("method") == "truth") & (pl.col("modality") == "truth"))
        for reg, part in comp.group_by("region"):
            role = CLASSES[int(reg[0])]
            vals = dict(zip(part["element"], part["atomic_percent"]))
            assert set(vals) == set(b.spec.elements) | {EXTRANEOUS}
            assert abs(sum(vals.values()) - 100.0) < 1e-3
            core = dict(zip(part["element"], part["atomic_percent_core"]))
            for el in b.spec.elements + [EXTRANEOUS]:
                expected = truth[role].get(el, 0.0)
                assert abs(vals[el] - expected) < 0.6, (b.spec.session_id, role, el, vals[el], expected)
                if core[el] is not None:
                    assert abs(core[el] - expected) < 0.6, (b.spec.session_id, role, el, core[el], expected)
                worst = max(worst, abs(vals[el] - expected))
    print(f"largest composition error vs class_composition: {worst:.2f} at.%")


def test_majority_labels_bleed_and_core_does_not(built):
    """Majority labels put chips straddling an interface into the regions: the whole-region figure of
    a cap takes in several at.% of film; the core figure (regions with >= 10 core chips) stays within
    0.6 at.% of the generator's class composition."""
    bleed = 0.0
    for b in built.values():
        truth = synth.class_composition(b.spec)
        regs = b.out.regions.filter((pl.col("method") == "truth") & (pl.col("modality") == "majority"))
        comp = b.out.region_composition.filter((pl.col("method") == "truth") & (pl.col("modality") == "majority"))
        for r in regs.iter_rows(named=True):
            part = comp.filter(pl.col("region") == r["region"])
            for row in part.iter_rows(named=True):
                want = truth[r["role"]].get(row["element"], 0.0)
                bleed = max(bleed, abs(row["atomic_percent"] - want))
                if r["n_core_chips"] >= 10:
                    assert abs(row["atomic_percent_core"] - want) < 0.6, (b.spec.session_id, r["role"], row)
            assert 0 < r["boundary_share"] < 1 and r["n_core_chips"] < r["n_chips"]
    assert bleed > 3.0, bleed


def test_summed_spectrum_not_mean_of_chip_percents(built):
    """Composition is CL of the region's summed spectrum (one region through quantify_region)."""
    b = built["defective@0"]
    sel = b.pure == 1
    one = quantify_region(b.sums[sel].sum(axis=0), (b.spec.energy_offset_kev, b.spec.energy_scale_kev),
                          b.spec.beam_kv, b.spec.elements, b.spec.kfactors)
    table = b.out.region_composition.filter((pl.col("method") == "truth") & (pl.col("modality") == "truth")
                                            & (pl.col("region") == 1))
    for el, v in zip(table["element"], table["atomic_percent"]):
        assert abs(one[el] - v) < 0.2  # stacked quantification shares fit weights: ~0.1 at.% at most


def test_o_shift_has_generator_sign(built):
    for b in built.values():
        truth = synth.class_composition(b.spec)
        for modality in ("truth", "majority"):
            sh = b.out.composition_shift.filter((pl.col("method") == "truth") & (pl.col("modality") == modality))
            assert list(sh["element"]) == ["La", "Fe", "O"]
            for col in ("percent_diff", "percent_diff_renorm"):
                got = dict(zip(sh["element"], sh[col]))
                for el in ("La", "Fe", "O"):
                    want = truth["film_disordered"][el] - truth["film_ordered"][el]
                    assert np.sign(got[el]) == np.sign(want), (b.spec.session_id, modality, col, el, got[el], want)
            assert sh["ordered_renorm_pct"].sum() == pytest.approx(100.0)
            if modality == "truth":  # pure chips: the shift's magnitude, not only its sign
                for r in sh.iter_rows(named=True):
                    want = truth["film_disordered"][r["element"]] - truth["film_ordered"][r["element"]]
                    got = r["disordered_at_pct"] - r["ordered_at_pct"]
                    assert abs(got - want) < 1.0, (b.spec.session_id, r["element"], got, want)
        row = b.out.composition_shift.filter((pl.col("modality") == "truth")
                                             & (pl.col("element") == "O")).row(0, named=True)
        expect = 100 * (row["disordered_at_pct"] - row["ordered_at_pct"]) / row["ordered_at_pct"]
        assert row["percent_diff"] == pytest.approx(expect)
        print(b.spec.session_id, "O shift (pure truth chips) %+.2f %%" % row["percent_diff"])


def test_single_chip_and_thin_regions_get_null_with_reason(built):
    b = built["defective@0"]
    lab = b.pure.copy()
    lab[0] = 9  # one chip in the cap corner
    strip = np.flatnonzero(b.grid.rows_cols()[0] == b.grid.n_rows - 1)  # bottom chip row: 1 chip thick
    lab[strip] = 8
    rf = region_descriptors(lab, b.grid, b.haadf, None, None, b.spec.beam_kv, b.spec.elements, None,
                            b.spec.pixel_size_nm, CLASSES, session_id="x", method="m", modality="d")
    one = rf.regions.filter(pl.col("region") == 9).row(0, named=True)
    assert one["n_chips"] == 1 and one["d_spacing_nm"] is None
    assert one["d_spacing_note"].startswith("single-chip"), one["d_spacing_note"]
    thin = rf.regions.filter(pl.col("region") == 8).row(0, named=True)
    assert thin["d_spacing_nm"] is None and "largest square" in thin["d_spacing_note"], thin["d_spacing_note"]
    assert rf.composition.is_empty()  # no EDS given: no composition rows, no error


def test_missing_modalities_and_empty_regions_give_nulls_not_errors(built):
    b = built["pristine@0.1"]
    sums = b.sums.copy()
    sums[b.pure == 3] = 0  # the cap region has no counts at all
    rf = region_descriptors(b.pure, b.grid, None, sums, (0.0, b.spec.energy_scale_kev), b.spec.beam_kv,
                            b.spec.elements, b.spec.kfactors, b.spec.pixel_size_nm, session_id="x")
    cap = rf.composition.filter(pl.col("region") == 3)
    assert len(cap) == len(b.spec.elements) + 1 and cap["atomic_percent"].null_count() == len(cap)
    assert rf.composition.filter(pl.col("region") == 1)["atomic_percent"].null_count() == 0
    assert rf.regions["d_spacing_note"].to_list() == ["no HAADF image in this session"] * 4
    assert rf.regions["d_spacing_nm"].null_count() == 4
    assert rf.regions["crystallinity"].null_count() == 4
    with pytest.raises(ValueError, match="labels"):
        region_descriptors(b.pure[:-1], b.grid, None, None, None, 300, ["O"], None, 0.05)
    with pytest.raises(ValueError, match="energy"):
        region_descriptors(b.pure, b.grid, None, b.sums, None, 300, ["O"], None, 0.05)


# ------------------------------------------------------------------------------- roles


def test_rule_assigns_roles_to_clustering_labels(built):
    for b in built.values():
        regs = b.out.regions.filter(pl.col("method") == "agglomerative")
        assert set(regs["role_source"]) == {"rule"}
        for r in regs.iter_rows(named=True):
            truth_class = int(np.flatnonzero(PERM == r["region"])[0])
            assert r["role"] == CLASSES[truth_class], (b.spec.session_id, r)
        sh = b.out.composition_shift.filter(pl.col("method") == "agglomerative")
        ref = b.out.composition_shift.filter((pl.col("method") == "truth") & (pl.col("modality") == "truth"))
        assert np.allclose(sh["percent_diff"].to_numpy(), ref["percent_diff"].to_numpy())
    # the defect domains are crystalline: disordered because their lattice is off the film's
    reason = _region(built["defective@0"], "agglomerative", "eds", "film_disordered")["role_reason"]
    assert "off-lattice" in reason, reason
    reason = _region(built["pristine@0.1"], "agglomerative", "eds", "film_disordered")["role_reason"]
    assert "amorphous" in reason, reason


def test_split_pristine_film_stays_ordered_and_overrides_win(built):
    b = built["defective@0"]
    regs = b.out.regions.filter((pl.col("method") == "truth") & (pl.col("modality") == "truth"))
    comp = b.out.region_composition.filter((pl.col("method") == "truth") & (pl.col("modality") == "truth"))
    # drop the defect region and duplicate the ordered film as a second cluster: no false disorder
    twin = regs.filter(pl.col("region") == 1).with_columns(pl.lit(7, dtype=pl.Int32).alias("region"))
    regs2 = pl.concat([regs.filter(pl.col("region") != 2), twin]).with_columns(
        pl.lit(None, dtype=pl.Utf8).alias("role"), pl.lit(None, dtype=pl.Utf8).alias("role_source"))
    comp2 = pl.concat([comp.filter(pl.col("region") != 2),
                       comp.filter(pl.col("region") == 1).with_columns(pl.lit(7, dtype=pl.Int32).alias("region"))])
    roles = dict(zip(*assign_roles(regs2, comp2).select("region", "role")))
    assert roles == {0: "substrate", 1: "film_ordered", 3: "cap", 7: "film_ordered"}
    assert composition_shift(assign_roles(regs2, comp2), comp2).is_empty()
    out = assign_roles(regs2, comp2, overrides={"truth:truth:7": "film_disordered", "truth:3": "capping_layer"})
    got = {r["region"]: (r["role"], r["role_source"]) for r in out.iter_rows(named=True)}
    assert got[7] == ("film_disordered", "manifest") and got[3] == ("capping_layer", "manifest")
    # a region half substrate, half film (chips straddling the interface): kept out of the film comparison
    mixed = regs.filter(pl.col("region") == 0).with_columns(pl.lit(8, dtype=pl.Int32).alias("region"),
                                                            pl.lit(None, dtype=pl.Utf8).alias("role"),
                                                            pl.lit(None, dtype=pl.Utf8).alias("role_source"))
    half = (comp.filter(pl.col("region").is_in([0, 1])).group_by("element", maintain_order=True)
            .agg(pl.col("atomic_percent").mean(), pl.col("session_id").first(), pl.col("method").first(),
                 pl.col("modality").first())
            .with_columns(pl.lit(8, dtype=pl.Int32).alias("region"))
            .select("session_id", "method", "modality", "region", "element", "atomic_percent"))
    r8 = assign_roles(mixed, half).row(0, named=True)
    assert r8["role"] == "interface" and "mixed" in r8["role_reason"], r8
    # class names map through the override too (few-shot support classes named otherwise)
    named = regs.with_columns(pl.lit("lfo_good").alias("role"), pl.lit("class_names").alias("role_source"))
    assert set(assign_roles(named, comp, overrides={"lfo_good": "film_ordered"})["role"]) == {"film_ordered"}
    for bad in ({"3": "cap"}, {"a:b:c:d": "cap"}, {"louvain:x": "cap"}, {"louvain:1": "Cap Layer"}):
        with pytest.raises(ValueError, match="roles"):
            parse_overrides(bad)


def test_single_modality_sessions_get_honest_roles(built):
    b = built["pristine@0.1"]
    seg = {("agglomerative", "eds"): np.where(b.pure >= 0, PERM[np.maximum(b.pure, 0)], -1)}
    energy = (b.spec.energy_offset_kev, b.spec.energy_scale_kev)
    eds_only = describe_session(seg, b.grid, None, b.sums, energy, b.spec.beam_kv, b.spec.elements,
                                b.spec.kfactors, b.spec.pixel_size_nm, session_id="x")
    assert sorted(eds_only.regions["role"]) == ["cap", "film", "film", "substrate"]  # order needs HAADF
    assert eds_only.composition_shift.is_empty()
    haadf_only = describe_session(seg, b.grid, b.haadf, None, None, b.spec.beam_kv, b.spec.elements, None,
                                  b.spec.pixel_size_nm, session_id="x")
    assert set(haadf_only.regions["role"]) == {"unknown"} and haadf_only.region_composition.is_empty()
    assert haadf_only.regions["d_spacing_nm"].null_count() == 2  # the amorphous film and the cap


# ------------------------------------------------------------------------------- lake, SQL


SEGMENT_DDL = """CREATE TABLE IF NOT EXISTS segment_labels (session_id VARCHAR NOT NULL, method VARCHAR NOT NULL,
    modality VARCHAR NOT NULL, chip_index INTEGER NOT NULL, label INTEGER NOT NULL,
    materialization_id VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS agreement (session_id VARCHAR NOT NULL, method VARCHAR NOT NULL, pair VARCHAR NOT NULL,
    ami DOUBLE, ari DOUBLE, materialization_id VARCHAR NOT NULL);"""


def _queries() -> list[Path]:
    qs = sorted((REPO / "sql" / "queries").glob("*.sql"))
    assert qs
    return qs


def test_views_and_queries_work_on_an_empty_lake(tmp_path):
    lake = Lake(tmp_path / "lake").ensure()
    Lake(tmp_path / "lake").ensure()  # idempotent
    for view in ("descriptors", "composition_shift", "lineage", "lineage_files"):
        assert lake.query(f"select * from {view}").is_empty()
    for q in _queries():
        text = q.read_text()
        assert re.match(r"^-- Question: ", text), f"{q.name} needs a '-- Question:' header"
        assert lake.query(text).is_empty()


def _write(lake, asset, sid, code, tables, upstream=(), params=None, weights=None):
    return lake.replace_partition(
        Provenance(asset_key=asset, partition_key=sid, code_version=code, parameters=params or {},
                   upstream=list(upstream), session_id=sid, weights=weights, device="cpu"),
        tables, {"session_id": sid})


@pytest.fixture(scope="module")
def populated(built, tmp_path_factory):
    """A lake holding both sessions: raw_session -> chips -> segmentation -> region_descriptors."""
    lake = Lake(tmp_path_factory.mktemp("lake")).ensure()
    with lake.connect() as con:
        con.execute(SEGMENT_DDL)
    mids = {}
    for sid, b in built.items():
        s = b.spec
        raw = _write(lake, "raw_session", sid, "raw_session-1", {
            "sessions": pl.DataFrame([{
                "session_id": sid, "campaign": s.campaign, "sample": s.sample, "dose_dpa": s.dose_dpa,
                "dose_key": s.dose_key, "beam_kv": s.beam_kv, "haadf_shape": list(b.haadf.shape),
                "pixel_size_nm": s.pixel_size_nm, "elements": s.elements, "chip_px": s.chip_px,
                "manifest": json.dumps({"kfactors": s.kfactors, "truth_classes": CLASSES,
                                        "roles": {"agglomerative:eds:9": "cap"}})}]),
            "session_files": pl.DataFrame([
                {"session_id": sid, "role": "haadf", "file_name": "haadf.hspy", "sha256": "a" * 64, "bytes": 10},
                {"session_id": sid, "role": "eds", "file_name": "eds.hspy", "sha256": "b" * 64, "bytes": 20}]),
        })
        rows, cols = b.grid.rows_cols()
        chips = _write(lake, "chips", sid, "chips-1", {
            "chip_grids": pl.DataFrame([{
                "session_id": sid, "chip_px": s.chip_px, "chip_px_source": "manifest", "n_rows": b.grid.n_rows,
                "n_cols": b.grid.n_cols, "origin_y": 0, "origin_x": 0, "pixel_size_nm": s.pixel_size_nm,
                "haadf_stack_sha": lake.put_array(b.grid.tiles(b.haadf)), "eds_sums_sha": lake.put_array(b.sums),
                "energy_offset_kev": s.energy_offset_kev, "energy_scale_kev": s.energy_scale_kev}]),
            "chips": pl.DataFrame({"session_id": sid, "chip_index": np.arange(b.grid.n_chips, dtype=np.int32),
                                   "row": rows.astype(np.int32), "col": cols.astype(np.int32),
                                   "y0": (rows * s.chip_px).astype(np.int32), "x0": (cols * s.chip_px).astype(np.int32),
                                   "truth_label": b.majority.astype(np.int32)})}, [raw])
        segs = _segmentations(b.pure, b.majority)
        lab_rows = pl.concat([pl.DataFrame({"session_id": sid, "method": m, "modality": d,
                                            "chip_index": np.flatnonzero(v >= 0).astype(np.int32),
                                            "label": v[v >= 0].astype(np.int32)})
                              for (m, d), v in segs.items()])
        seg = _write(lake, "segmentation", sid, "segmentation-1", {"segment_labels": lab_rows}, [chips],
                     weights="none")
        agree = pl.DataFrame({"session_id": sid, "method": ["truth", "truth", "agglomerative"],
                              "pair": ["truth-majority", "majority-eds", "eds-truth"], "ami": [0.9, 0.8, 1.0]})
        _write(lake, "agreement", sid, "agreement-1", {"agreement": agree}, [seg])
        desc = _write(lake, "region_descriptors", sid, "region_descriptors-1", b.out.tables(), [chips, seg],
                      params={"shift_elements": ["La", "Fe", "O"]})
        mids[sid] = {"raw": raw["materialization_id"], "desc": desc["materialization_id"]}
    # a third session with no segmentation or descriptors at all: must be absent, not wrong
    _write(lake, "raw_session", "pristine@0", "raw_session-1", {"sessions": pl.DataFrame([{
        "session_id": "pristine@0", "campaign": CAMPAIGN, "sample": "pristine", "dose_dpa": 0.0, "dose_key": "0"}])})
    return lake, mids


def test_descriptor_views_join_sessions(populated, built):
    lake, _ = populated
    d = lake.query("select * from descriptors")
    n_expected = sum(len(b.out.region_composition) for b in built.values())
    assert len(d) == n_expected and d["campaign"].unique().to_list() == [CAMPAIGN]
    assert d.filter(pl.col("session_id") == "pristine@0").is_empty()
    sh = lake.query("select * from composition_shift where element = 'O' and modality = 'truth' order by dose_dpa")
    assert sh["session_id"].to_list() == ["defective@0", "pristine@0.1"]
    assert (sh["percent_diff"] > 0).all()
    # change_vs_lowest_dose is 0 at each sample's lowest dose in the lake
    assert sh["change_vs_lowest_dose"].to_list() == [0.0, 0.0]
    total = sum(len(b.out.composition_shift) for b in built.values())
    assert lake.query(f"select count(*) as n from {SHIFT_TABLE}")["n"][0] == total


def test_views_default_to_core_figures_with_intervals(populated, built):
    """composition_shift and descriptors show the core figures by default (basis 'core'), with the
    interval and flag, and keep the whole-region figures beside them; the pooled per sample x dose
    views answer too."""
    lake, _ = populated
    sh = lake.query("select * from composition_shift where method = 'truth' and modality = 'majority' "
                    "and element = 'O' order by session_id")
    assert len(sh) == 2 and set(sh["basis"]) == {"core"}
    for r in sh.iter_rows(named=True):
        row = built[r["session_id"]].out.composition_shift.filter(
            (pl.col("method") == "truth") & (pl.col("modality") == "majority") & (pl.col("element") == "O")).row(0, named=True)
        assert r["percent_diff"] == pytest.approx(row["percent_diff_core"])
        assert r["percent_diff_whole"] == pytest.approx(row["percent_diff"])
        assert r["ci_low"] < r["percent_diff"] < r["ci_high"] and r["significant"] == (r["ci_low"] > 0 or r["ci_high"] < 0)
        assert r["ci_level"] == 0.95 and r["pair_n_acquisitions"] == 1
    d = lake.query("select * from descriptors where method = 'truth' and modality = 'majority' and element = 'O' "
                   "and role = 'cap'")
    assert set(d["basis"]) == {"core"} and (d["atomic_percent"] < d["atomic_percent_whole"]).all()
    assert (d["ci_low"] <= d["atomic_percent"]).all() and (d["atomic_percent"] <= d["ci_high"]).all()
    pair = lake.query("select * from composition_shift_pair where element = 'O' and modality = 'majority'")
    assert len(pair) == 2 and (pair["n_acquisitions"] == 1).all()
    roles = lake.query("select * from role_descriptors_pair where role = 'film_ordered' and element = 'La' "
                       "and modality = 'majority'")
    assert len(roles) == 2 and (roles["d_spacing_nm"] - synth.A_LFO).abs().max() < 0.01


def test_lineage_reaches_raw_files(populated):
    lake, mids = populated
    root = lake.query("select materialization_id from descriptors where session_id = 'defective@0' "
                      "and role = 'film_ordered' and element = 'O' and method = 'truth' and modality = 'truth'")
    root_id = root["materialization_id"][0]
    assert root_id == mids["defective@0"]["desc"]
    lin = lake.query(f"select * from lineage where root_id = '{root_id}' order by depth, asset_key")
    assert lin["asset_key"].to_list() == ["region_descriptors", "chips", "segmentation", "raw_session"]
    assert lin["depth"].to_list() == [0, 1, 1, 2]  # chips is reached twice (directly, via segmentation)
    raw = lin.filter(pl.col("asset_key") == "raw_session").row(0, named=True)
    assert raw["materialization_id"] == mids["defective@0"]["raw"]
    assert sorted(f["sha256"] for f in raw["raw_files"]) == ["a" * 64, "b" * 64]
    assert {"code_version", "parameters", "weights", "device"} <= set(lin.columns)
    files = lake.query(f"select * from lineage_files where root_id = '{root_id}'")
    assert sorted(files["file_name"]) == ["eds.hspy", "haadf.hspy"]


def test_describe_lake_session_reads_everything_from_the_lake(populated, built):
    from mmlake.descriptors import describe_lake_session

    lake, _ = populated
    b = built["defective@0"]
    out = describe_lake_session(lake, "defective@0")
    # segment_labels' own truth/truth (pure chips) wins over chips.truth_label
    assert sorted(set(out.regions.select("method", "modality").rows())) == [
        ("agglomerative", "eds"), ("truth", "ensemble"), ("truth", "majority"), ("truth", "truth")]
    for modality in ("truth", "majority"):
        got = out.regions.filter(pl.col("modality") == modality).sort("region")
        ref = b.out.regions.filter(pl.col("modality") == modality).sort("region")
        assert got["role"].to_list() == CLASSES and got["role_source"].to_list() == ["class_names"] * 4
        assert got.drop("role_reason").equals(ref.drop("role_reason"))
        gc = out.region_composition.filter(pl.col("modality") == modality).sort("region", "element")
        rc = b.out.region_composition.filter(pl.col("modality") == modality).sort("region", "element")
        assert np.abs(gc["atomic_percent"].to_numpy() - rc["atomic_percent"].to_numpy()).max() < 1e-6
    lake2_truth = lake.query("select count(*) as n from chips where session_id = 'defective@0' and truth_label = 1")
    assert lake2_truth["n"][0] == int((b.majority == 1).sum())
    assert out.params["role_overrides"] == {"agglomerative:eds:9": "cap"}
    assert out.params["class_names"]["truth"] == CLASSES


#: tables this file's lake does not fill (queries about them are answered by the demo-campaign tests)
NOT_HERE = ("haadf_embeddings", "eds_composition", "feature_sets", "crystal_")


def test_example_queries_answer(populated):
    lake, _ = populated
    asked = 0
    for q in _queries():
        text = q.read_text()
        if any(t in text for t in NOT_HERE):
            continue
        res = lake.query(text)
        assert not res.is_empty(), q.name
        asked += 1
    assert asked >= 5
    lin = lake.query((REPO / "sql" / "queries" / "descriptor_lineage.sql").read_text())
    assert "raw_session" in lin["asset_key"].to_list() and lin["sha256"].drop_nulls().len() == 2
    d = lake.query((REPO / "sql" / "queries" / "ordered_film_d_spacing.sql").read_text())
    assert ((d["d_spacing_nm"] - synth.A_LFO).abs() < 0.01).all()


# ------------------------------------------------------------------------------- pictures, report, export


def test_pictures_are_pngs(built):
    from mmlake import plots

    b = built["defective@0"]
    segs = _segmentations(b.pure, b.majority)
    roles = {}
    for r in b.out.regions.iter_rows(named=True):
        roles.setdefault((r["method"], r["modality"]), {})[r["region"]] = r["role"]
    agreement = pl.DataFrame({"method": ["louvain", "louvain", "fewshot"],
                              "pair": ["haadf-eds", "eds-ensemble", "haadf-eds"],
                              "ami": [0.3, 0.7, 0.5]})
    pngs = [plots.segmentation_overlay(b.haadf, segs, b.grid, "defective@0", roles),
            plots.segmentation_overlay(None, segs, b.grid, "no haadf"),
            plots.segmentation_overlay(b.haadf, {}, b.grid, "none"),
            plots.composition_bars(b.out.composition_shift, "defective@0", b.out.regions),
            plots.composition_bars(b.out.composition_shift.clear(), "empty"),
            plots.agreement_heatmap(agreement, "defective@0"),
            plots.agreement_heatmap(agreement.clear(), "empty")]
    for png in pngs:
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_opens_in_headless_chromium_without_errors(populated, tmp_path):
    from mmlake.report import collect_campaign, write_campaign_report

    lake, _ = populated
    path = write_campaign_report(lake, CAMPAIGN, tmp_path / "report" / "campaign.html")
    text = path.read_text()
    # self-contained: plotly.js inline, no script or stylesheet fetched from anywhere
    assert not re.search(r"<script[^>]*\bsrc=|<link[^>]*\bhref=", text)
    assert "Plotly" in text and len(text) > 1_000_000
    data = collect_campaign(lake, CAMPAIGN)
    assert len(data.sessions) == 3 and set(data.images) == {"pristine@0.1", "defective@0"}
    n_expected = int(re.search(r"'data-plots-expected','(\d+)'", text).group(1))
    assert n_expected >= 7
    # empty campaign: still a valid page
    assert "No sessions" in write_campaign_report(lake, "nope", tmp_path / "empty.html").read_text()
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium); the report was written "
                    "but not opened in a browser")
    proc = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=15000", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    dom = proc.stdout
    m = re.search(r'data-plots-rendered="(\d+)"', dom)
    assert m and int(m.group(1)) == n_expected, (m and m.group(0), n_expected)
    assert dom.count('class="main-svg"') >= n_expected  # plotly.js ran (offline) and drew every figure


def test_export_label_maps_as_calibrated_hyperspy_signals(populated, built, tmp_path):
    import hyperspy.api as hs

    from mmlake.errors import LakeError
    from mmlake.export import export_session

    lake, _ = populated
    b = built["pristine@0.1"]
    paths = export_session(lake, "pristine@0.1", tmp_path / "export")
    names = sorted(p.name for p in paths)
    assert names == ["pristine@0.1_agglomerative_eds_labels.hspy", "pristine@0.1_truth_ensemble_labels.hspy",
                     "pristine@0.1_truth_majority_labels.hspy",
                     "pristine@0.1_truth_truth_labels.hspy"]  # chips.truth_label is truth/truth, as segment_labels
    s = hs.load(tmp_path / "export" / "pristine@0.1_truth_majority_labels.hspy")
    assert s.data.shape == b.haadf.shape
    for ax in s.axes_manager.signal_axes:
        assert ax.units == "nm" and ax.scale == pytest.approx(b.spec.pixel_size_nm)
    assert np.array_equal(s.data, b.grid.upsample(b.majority.astype(np.int32), b.haadf.shape, fill=-1))
    assert s.metadata.mmlake.method == "truth" and s.metadata.mmlake.roles.label_1 == "film_ordered"
    with pytest.raises(LakeError, match="no chip grid"):
        export_session(lake, "pristine@0", tmp_path / "x")
    with pytest.raises(LakeError, match="no session"):
        export_session(lake, "nothing@0", tmp_path / "x")


def _fft_period_px(tile, g_px, pad=4, search=0.2):
    """The per-tile FFT that local_periods_px replaces (reference for the test below)."""
    import math

    from mmlake.lattice import hann2d

    h, w = tile.shape
    n = int(2 ** math.ceil(math.log2(pad * max(h, w))))
    lp = np.log(np.abs(np.fft.fft2((tile - tile.mean()) * hann2d(h, w), s=(n, n))) ** 2 + 1e-30)
    k = np.fft.fftfreq(n)
    g = math.hypot(*g_px)
    iy, ix = np.flatnonzero(np.abs(k - g_px[0]) <= search * g), np.flatnonzero(np.abs(k - g_px[1]) <= search * g)
    sub = lp[np.ix_(iy, ix)]
    a, b = np.unravel_index(int(np.argmax(sub)), sub.shape)
    y0, x0 = iy[a], ix[b]

    def vertex(m1, c0, p1):
        curv = m1 - 2 * c0 + p1
        return 0.0 if curv >= 0 else float(np.clip(0.5 * (m1 - p1) / curv, -0.5, 0.5))

    dy = vertex(lp[(y0 - 1) % n, x0], lp[y0, x0], lp[(y0 + 1) % n, x0])
    dx = vertex(lp[y0, (x0 - 1) % n], lp[y0, x0], lp[y0, (x0 + 1) % n])
    return 1.0 / math.hypot(k[y0] + dy / n, k[x0] + dx / n)


@pytest.mark.parametrize("side, period, angle", [(32, 4.1, 0.3), (48, 6.3, 1.2), (40, 10.0, -0.01)])
def test_local_periods_match_a_per_tile_fft_and_find_the_period(side, period, angle):
    """The partial DFT of local_periods_px gives the per-tile FFT's periods (angle -0.01: the search
    window straddles ky = 0, wrapping around the bin indices) and the lattice's own period."""
    import math

    from mmlake.descriptors.spacing import local_periods_px

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:side, 0:side]
    gy, gx = math.sin(angle) / period, math.cos(angle) / period
    tiles = np.stack([np.cos(2 * np.pi * (gy * yy + gx * xx) + rng.uniform(0, 6))
                      + np.cos(2 * np.pi * (-gx * yy + gy * xx)) + 0.5 * rng.normal(size=(side, side))
                      for _ in range(40)])
    guess = (gy * 1.03, gx * 0.98)
    got = local_periods_px(tiles, guess, batch=16)
    want = np.array([_fft_period_px(t, guess) for t in tiles])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert abs(np.median(got) - period) < 0.02 * period
