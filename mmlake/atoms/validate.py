"""Validation of column finding and order parameters against truth mmlake did not compute.

**AtomAgined** (``../shared/data/atomagined/general/h5/*.h5`` relative to the repository root; never
copied into the repository): PRISM-simulated HAADF images (256 x 256 px, 26 A wide) with
``projection/full_coords`` (projected atom positions, stored (x, y) in pixels) and
``haadf/peak_map_clean`` (the dataset's column map, one pixel per column). Images: ``raw`` (the
simulation), ``stem00-clean`` (scan-line jitter of ~1 px and weak noise added), ``stem00-blbk1``
(strong jitter, noise and background).

- **Truth columns** = the peak-map pixels. A found column matches the nearest unmatched truth column
  within ``match_px`` (2 px = 0.2 A; one-to-one, closest pairs first). Only found columns inside the
  truth's bounding box (atom coordinates +- 2 px) count: the simulation cell has no atoms in its
  outer ~10 px, where the jittered images carry scan artefacts. recall = matched / truth,
  precision = matched / found.
- **Projected position** of a truth column: mean of the atom coordinates within 1.5 px of its peak
  pixel (assigned to their nearest peak). ``rms_projected``: RMS distance of matched columns from it
  (columns with atoms); ``rms_projected_single``: only columns whose atoms coincide (spread <= 0.5 px).
  The raw image's own peaks sit ~0.4 px RMS from these positions even for isolated columns (the
  frozen-phonon displacements the simulation rendered), so this is a floor no localiser goes below.
- **Image position** (``rms_image``): the column peak in the noise- and jitter-free ``raw`` image,
  fitted independently of mmlake's batched fitter with one ``scipy.optimize.curve_fit`` of a 2-D
  Gaussian + offset per column (disk of 1.5 sigma around the peak pixel). It measures how far the
  microscope effects of ``clean`` / ``blbk1`` move the estimate.
- ``recall_detectable``: recall over the truth columns whose matched-filter SNR in that image is at
  least 5 (amplitude from ``raw`` scaled to the image by least squares, over the image's noise).

**Demo campaign** (:mod:`mmlake.synth`, public names only): the generator's regions give the truth
per chip (majority region; "pure" chips lie wholly in one region). Crystalline = substrate,
film_ordered, film_defect; amorphous = film_amorphous (and the cap, rendered as lattice-free speckle,
reported separately). Positional disorder by region: film_ordered and substrate 0, film_defect
``DEFECT_JITTER_NM`` per axis (plus the domain's rotation and expansion), film_amorphous none left.

Run ``python -m mmlake.atoms.validate`` for the tables.
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path

import numpy as np

KEYS = {"raw": "haadf/raw", "clean": "haadf/stem00-clean", "blbk1": "haadf/stem00-blbk1"}


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def atomagined_dir(root: Path | None = None) -> Path:
    """``../shared/data/atomagined`` relative to the repository root."""
    return (root or repo_root()).parent / "shared" / "data" / "atomagined"


def atomagined_files(root: Path | None = None) -> list[str]:
    return sorted(glob.glob(str(atomagined_dir(root) / "general" / "h5" / "*.h5")))


def load_atomagined(path):
    """(images {raw, clean, blbk1}, peak pixels (n, 2) (row, col), atoms (m, 2) (y, x), attributes)."""
    import h5py

    with h5py.File(path, "r") as f:
        imgs = {k: f[v][()].astype(np.float64) for k, v in KEYS.items()}
        peaks = np.argwhere(f["haadf/peak_map_clean"][()]).astype(np.float64)
        atoms = f["projection/full_coords"][()].astype(np.float64)[:, ::-1]  # stored (x, y)
        attrs = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.attrs.items()}
    return imgs, peaks, atoms, attrs


def match(found, truth, radius):
    """One-to-one matching, closest pairs first: (pairs (k, 2) [found, truth], distances (k,))."""
    from scipy.spatial import cKDTree

    found = np.asarray(found, float).reshape(-1, 2)
    truth = np.asarray(truth, float).reshape(-1, 2)
    if not len(found) or not len(truth):
        return np.zeros((0, 2), int), np.zeros(0)
    d, j = cKDTree(truth).query(found, k=min(6, len(truth)), distance_upper_bound=radius)
    d, j = d.reshape(len(found), -1), j.reshape(len(found), -1)
    ii = np.repeat(np.arange(len(found)), d.shape[1])
    d, j = d.ravel(), j.ravel()
    ok = np.isfinite(d)
    ii, j, d = ii[ok], j[ok], d[ok]
    order = np.argsort(d, kind="stable")
    uf = np.zeros(len(found), bool)
    ut = np.zeros(len(truth), bool)
    out = []
    for k in order:
        if not uf[ii[k]] and not ut[j[k]]:
            uf[ii[k]] = ut[j[k]] = True
            out.append((ii[k], j[k], d[k]))
    if not out:
        return np.zeros((0, 2), int), np.zeros(0)
    o = np.array(out)
    return o[:, :2].astype(int), o[:, 2]


def projected_truth(peaks: np.ndarray, atoms: np.ndarray, assign_px: float = 1.5):
    """Per peak pixel: mean assigned atom position, whether it has atoms, whether they coincide."""
    from scipy.spatial import cKDTree

    d, i = cKDTree(peaks).query(atoms)
    sub = peaks.copy()
    has = np.zeros(len(peaks), bool)
    single = np.zeros(len(peaks), bool)
    ok = d <= assign_px
    for j in np.unique(i[ok]):
        a = atoms[ok & (i == j)]
        sub[j] = a.mean(axis=0)
        has[j] = True
        single[j] = float(np.ptp(a, axis=0).max()) <= 0.5
    return sub, has, single


def _gauss2d(coords, A, y0, x0, s, c):
    y, x = coords
    return c + A * np.exp(-((y - y0) ** 2 + (x - x0) ** 2) / (2 * s * s))


def curve_fit_columns(image: np.ndarray, centres: np.ndarray, sigma_px: float, radius_sigma: float = 1.5):
    """The per-column baseline: one scipy.optimize.curve_fit per column (disk of radius_sigma x sigma
    around each integer centre). Returns (n, 2) fitted (y, x), NaN where a fit failed."""
    from scipy.optimize import curve_fit

    img = np.asarray(image, dtype=np.float64)
    H, W = img.shape
    r = max(1.5, radius_sigma * sigma_px)
    h = int(np.ceil(r))
    out = np.full((len(centres), 2), np.nan)
    dy, dx = np.mgrid[-h:h + 1, -h:h + 1]
    disk = dy ** 2 + dx ** 2 <= r * r
    for k, (cy, cx) in enumerate(np.rint(centres).astype(int)):
        yy, xx = cy + dy[disk], cx + dx[disk]
        ok = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        if ok.sum() < 6:
            continue
        yy, xx = yy[ok], xx[ok]
        v = img[yy, xx]
        p0 = (max(v.max() - v.min(), 1e-12), cy, cx, sigma_px, v.min())
        try:
            p, _ = curve_fit(_gauss2d, (yy.astype(float), xx.astype(float)), v, p0=p0, maxfev=400)
        except Exception:  # noqa: BLE001 - a failed baseline fit is recorded as NaN
            continue
        if np.hypot(p[1] - cy, p[2] - cx) <= 2 * r:
            out[k] = p[1:3]
    return out


def oracle_row_offsets(image: np.ndarray, raw: np.ndarray, max_shift_px: float = 3.0) -> np.ndarray:
    """Per-row x offsets of ``image`` registered against the jitter-free ``raw`` (scaled to the image by
    least squares): the scan-line jitter as well as one row cross-correlation can know it, for the
    ``oracle_jitter`` ceiling of :func:`evaluate_atomagined` (a diagnostic: it reads the truth image)."""
    from mmlake.atoms.scan import row_jitter

    A = np.column_stack([raw.ravel(), np.ones(raw.size)])
    gain, off = np.linalg.lstsq(A, image.ravel(), rcond=None)[0]
    return row_jitter(image, max_shift_px=max_shift_px, reference=gain * raw + off, start=np.zeros(image.shape[0]))


def evaluate_atomagined(files, keys=("raw", "clean", "blbk1"), match_px: float = 2.0, image_reference: bool = True,
                        oracle_jitter: bool = False, **locate_kw) -> dict:
    """Totals over ``files`` per image kind (see module docstring) plus per-file rows and totals per
    structure (``by_structure``: the ICSD code, the file name's first field). ``oracle_jitter``: rows
    registered against the ``raw`` image first (:func:`oracle_row_offsets`), then located without
    scan correction: what a perfect jitter correction would give (not a method: it reads the truth)."""
    from mmlake.atoms import detect
    from mmlake.atoms.columns import locate_columns
    from mmlake.atoms.scan import correct_rows

    tot = {k: {"truth": 0, "found": 0, "matched": 0, "e_proj": [], "e_single": [], "e_img": [],
               "det_truth": 0, "det_matched": 0} for k in keys}
    rows = []
    for fn in files:
        imgs, P, atoms, _ = load_atomagined(fn)
        sub, has, single = projected_truth(P, atoms)
        lo, hi = atoms.min(axis=0) - 2, atoms.max(axis=0) + 2
        raw = imgs["raw"]
        ref_img = None
        if image_reference:
            s_raw = detect.estimate_sigma_px(raw)
            ref_img = curve_fit_columns(raw, P, s_raw)
        for k in keys:
            img = imgs[k]
            if oracle_jitter:
                img = correct_rows(img, oracle_row_offsets(img, raw))
                loc = locate_columns(img, **{**locate_kw, "scan_correction": False})
            else:
                loc = locate_columns(img, **locate_kw)
            F = np.column_stack([loc.y, loc.x])
            F = F[np.all((F >= lo) & (F <= hi), axis=1)]
            pr, _ = match(F, P, match_px)
            t = tot[k]
            t["truth"] += len(P)
            t["found"] += len(F)
            t["matched"] += len(pr)
            e = np.hypot(*(F[pr[:, 0]] - sub[pr[:, 1]]).T)
            t["e_proj"].append(e[has[pr[:, 1]]])
            t["e_single"].append(e[single[pr[:, 1]]])
            if ref_img is not None:
                ei = np.hypot(*(F[pr[:, 0]] - ref_img[pr[:, 1]]).T)
                t["e_img"].append(ei[np.isfinite(ei)])
            # detectable truth: matched-filter SNR >= 5 in this image
            A = np.column_stack([raw.ravel(), np.ones(raw.size)])
            gain = np.linalg.lstsq(A, img.ravel(), rcond=None)[0][0]
            noise = detect.noise_sigma(img)
            s = loc.params["sigma_px"]
            bg = detect.background(raw, s)
            pi = P.astype(int)
            amp = gain * (raw[pi[:, 0], pi[:, 1]] - bg[pi[:, 0], pi[:, 1]])
            snr = amp * np.sqrt(np.pi) * s / max(noise, 1e-300)
            det = snr >= 5
            t["det_truth"] += int(det.sum())
            hit = np.zeros(len(P), bool)
            hit[pr[:, 1]] = True
            t["det_matched"] += int((hit & det).sum())
            rows.append({"file": Path(fn).name, "image": k, "truth": len(P), "found": len(F), "matched": len(pr),
                         "recall": len(pr) / len(P), "precision": len(pr) / max(len(F), 1),
                         "rms_projected": float(np.sqrt(np.mean(e[has[pr[:, 1]]] ** 2))) if has[pr[:, 1]].any() else None})
    out = {"files": len(files), "match_px": match_px, "rows": rows, "by_structure": _by_structure(rows)}
    for k, t in tot.items():
        ep, es = np.concatenate(t["e_proj"]), np.concatenate(t["e_single"])
        ei = np.concatenate(t["e_img"]) if t["e_img"] else np.zeros(0)
        out[k] = {"truth": t["truth"], "found": t["found"], "matched": t["matched"],
                  "recall": t["matched"] / max(t["truth"], 1), "precision": t["matched"] / max(t["found"], 1),
                  "recall_detectable": t["det_matched"] / max(t["det_truth"], 1),
                  "detectable_share": t["det_truth"] / max(t["truth"], 1),
                  "rms_projected": float(np.sqrt(np.mean(ep ** 2))) if ep.size else None,
                  "median_projected": float(np.median(ep)) if ep.size else None,
                  "median_image": float(np.median(ei)) if ei.size else None,
                  "rms_projected_single": float(np.sqrt(np.mean(es ** 2))) if es.size else None,
                  "n_single": int(es.size),
                  "rms_image": float(np.sqrt(np.mean(ei ** 2))) if ei.size else None, "n_image": int(ei.size)}
    return out


def _by_structure(rows: list[dict]) -> dict:
    """{(structure, image): {truth, found, matched, missed, false}} from the per-file rows."""
    out: dict = {}
    for r in rows:
        t = out.setdefault((r["file"].split(".")[0], r["image"]), {"truth": 0, "found": 0, "matched": 0})
        for f in ("truth", "found", "matched"):
            t[f] += r[f]
    for t in out.values():
        t["missed"], t["false"] = t["truth"] - t["matched"], t["found"] - t["matched"]
    return out


def parse_settings(items) -> dict:
    """``KEY=VALUE`` strings (``--set``) as keyword arguments of ``locate_columns``: VALUE read as an
    int, a float, true/false or none where it is one, else kept as a string."""
    out = {}
    for item in items or ():
        key, sep, val = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        v = val.strip()
        low = v.lower()
        if low in ("true", "false"):
            out[key] = low == "true"
        elif low == "none":
            out[key] = None
        else:
            try:
                out[key] = int(v)
            except ValueError:
                try:
                    out[key] = float(v)
                except ValueError:
                    out[key] = v
    return out


# ---------------------------------------------------------------------------------------------
# demo campaign

CRYSTALLINE_REGIONS = ("substrate", "film_ordered", "film_defect")


def demo_chip_table(specs=None, **locate_kw):
    """Per chip of every demo session: order parameters, majority region and purity."""
    import polars as pl

    from mmlake.atoms.columns import analyse_columns
    from mmlake.atoms.order import chip_order
    from mmlake.chips import ChipGrid, majority_labels
    from mmlake.synth import DEMO_CAMPAIGN, REGION_NAMES, make_geometry, make_haadf

    frames = []
    for spec in (DEMO_CAMPAIGN if specs is None else specs):
        geom = make_geometry(spec)
        img = make_haadf(spec, geom)
        grid = ChipGrid.fit(img.shape, spec.chip_px)
        res = analyse_columns(img, spec.pixel_size_nm, grid=grid, **locate_kw)
        order = chip_order(res.frame, grid, spec.pixel_size_nm)
        reg = majority_labels(geom.regions, grid)
        tiles = grid.tiles(geom.regions).reshape(grid.n_chips, -1)
        purity = (tiles == reg[:, None]).mean(axis=1)
        frames.append(order.with_columns(
            pl.lit(f"{spec.sample}@{spec.dose_key}").alias("session"),
            pl.Series("region", [REGION_NAMES[r] for r in reg]), pl.Series("purity", purity)))
    return pl.concat(frames)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (ties counted half) of ``scores`` for ``positive`` (bool)."""
    from scipy.stats import rankdata

    s = np.asarray(scores, float)
    pos = np.asarray(positive, bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def demo_auc(table, parameter: str = "disorder", amorphous=("film_amorphous",), pure: bool = True) -> dict:
    """AUC of ``parameter`` (higher = amorphous) for crystalline vs ``amorphous`` chips."""
    import polars as pl

    t = table.filter(pl.col("region").is_in(list(CRYSTALLINE_REGIONS) + list(amorphous)))
    if pure:
        t = t.filter(pl.col("purity") >= 0.999)
    v = t[parameter].cast(pl.Float64).fill_null(np.nan).to_numpy()
    pos = t["region"].is_in(list(amorphous)).to_numpy()
    m = np.isfinite(v)
    sign = -1.0 if parameter == "lattice_fraction" else 1.0
    return {"parameter": parameter, "auc": auc(sign * v[m], pos[m]), "n_crystalline": int((~pos[m]).sum()),
            "n_amorphous": int(pos[m].sum()), "amorphous": list(amorphous), "pure_only": pure}


def generator_jitter_sweep(jitters_nm=(0.0, 0.0125, 0.025, 0.04, 0.06), spec_index: int = 2) -> list[dict]:
    """Median order parameters of the pure film_defect chips of one demo session as the generator's
    defect-domain column jitter varies. The generator exposes the jitter only as the module constant
    it reads when rendering (``mmlake.synth.haadf.DEFECT_JITTER_NM``); it is patched for the call
    (unittest.mock, nothing written). Raises LookupError when the generator no longer has it."""
    from unittest import mock

    import polars as pl

    import mmlake.synth.haadf as gen
    from mmlake.synth import DEMO_CAMPAIGN

    if not hasattr(gen, "DEFECT_JITTER_NM"):
        raise LookupError("mmlake.synth.haadf has no DEFECT_JITTER_NM: the generator changed; sweep not run")
    spec = DEMO_CAMPAIGN[spec_index]
    out = []
    for j in jitters_nm:
        with mock.patch.object(gen, "DEFECT_JITTER_NM", float(j)):
            tab = demo_chip_table([spec])
        t = tab.filter((pl.col("purity") >= 0.999) & (pl.col("region") == "film_defect"))
        ref = tab.filter((pl.col("purity") >= 0.999) & (pl.col("region") == "film_ordered"))
        out.append({"jitter_nm": float(j), "chips": len(t),
                    "rms_displacement_nm": float(t["rms_displacement_nm"].median()),
                    "disorder": float(t["disorder"].median()),
                    "lattice_fraction": float(t["lattice_fraction"].median()),
                    "film_ordered_rms_nm": float(ref["rms_displacement_nm"].median())})
    return out


def main(argv=None) -> int:  # pragma: no cover - prints the validation tables
    import argparse
    import time

    import polars as pl

    ap = argparse.ArgumentParser(description="mmlake.atoms validation tables")
    ap.add_argument("--step", type=int, default=1, help="use every STEP-th AtomAgined file")
    ap.add_argument("--no-image-reference", action="store_true", help="skip the per-column curve_fit reference")
    ap.add_argument("--skip-atomagined", action="store_true")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--keys", default=",".join(KEYS), help="AtomAgined images to evaluate (comma-separated; "
                    f"default {','.join(KEYS)})")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a locate_columns keyword for the AtomAgined runs (repeatable), e.g. --set k_candidate=2.0")
    ap.add_argument("--oracle-jitter", action="store_true",
                    help="register rows against the raw image before locating (the perfect-jitter ceiling)")
    ap.add_argument("--by-structure", action="store_true", help="also print totals per structure (ICSD code)")
    a = ap.parse_args(argv)
    keys = tuple(k.strip() for k in a.keys.split(",") if k.strip())
    if not keys or not set(keys) <= set(KEYS):
        ap.error(f"--keys must name some of {', '.join(KEYS)}, got {a.keys!r}")
    try:
        locate_kw = parse_settings(a.set)
    except ValueError as exc:
        ap.error(str(exc))
    if not a.skip_atomagined:
        files = atomagined_files()[::a.step]
        if not files:
            print(f"AtomAgined not found under {atomagined_dir()}; skipped")
        else:
            t0 = time.perf_counter()
            r = evaluate_atomagined(files, keys=keys, image_reference=not a.no_image_reference,
                                    oracle_jitter=a.oracle_jitter, **locate_kw)
            print(f"AtomAgined general/h5: {r['files']} files, match radius {r['match_px']} px "
                  f"({time.perf_counter() - t0:.0f} s){' locate_columns ' + str(locate_kw) if locate_kw else ''}"
                  f"{' (oracle jitter: rows registered against raw)' if a.oracle_jitter else ''}")
            for k in keys:
                v = r[k]
                print(f"  {k:6s} truth {v['truth']} found {v['found']} matched {v['matched']}: "
                      f"recall {v['recall']:.4f} precision {v['precision']:.4f} | recall (SNR>=5 columns, "
                      f"{v['detectable_share']:.3f} of truth) {v['recall_detectable']:.4f} | RMS px: projected "
                      f"{v['rms_projected']:.3f}, projected single-atom-position columns {v['rms_projected_single']:.3f}"
                      f" (n={v['n_single']}), vs raw-image peak {v['rms_image'] if v['rms_image'] is None else round(v['rms_image'], 3)}"
                      f" (n={v['n_image']}) | median px: projected {v['median_projected']:.3f}, raw-image peak "
                      f"{v['median_image'] if v['median_image'] is None else round(v['median_image'], 3)}")
            if a.by_structure:
                for (st, k), t in sorted(r["by_structure"].items()):
                    print(f"    {st} {k:6s} truth {t['truth']} found {t['found']} matched {t['matched']}: "
                          f"missed {t['missed']}, false {t['false']}")
    if not a.skip_demo:
        t0 = time.perf_counter()
        tab = demo_chip_table()
        print(f"demo campaign: {len(tab)} chips ({time.perf_counter() - t0:.0f} s)")
        for par in ("disorder", "lattice_fraction", "rms_displacement_rel", "nn_distance_cv"):
            for am in (("film_amorphous",), ("film_amorphous", "cap")):
                for pure in (True, False):
                    d = demo_auc(tab, par, am, pure)
                    print(f"  AUC {par:22s} crystalline vs {'+'.join(am):20s} {'pure' if pure else 'all '} chips: "
                          f"{d['auc']:.4f} (n {d['n_crystalline']} vs {d['n_amorphous']})")
        summ = (tab.filter(pl.col("purity") >= 0.999).group_by("region")
                .agg(pl.len().alias("chips"), pl.col("disorder").median(), pl.col("lattice_fraction").median(),
                     pl.col("rms_displacement_nm").median(), pl.col("nn_distance_cv").median(),
                     pl.col("intensity_cv_a").median(), pl.col("strain_exx").median())
                .sort("disorder"))
        with pl.Config(tbl_cols=-1, tbl_width_chars=200):
            print(summ)
        try:
            sweep = generator_jitter_sweep()
        except LookupError as exc:
            print(f"generator jitter sweep skipped: {exc}")
        else:
            print(f"generator jitter sweep ({DEMO_NAME(2)}, defect-domain column jitter per axis, "
                  "median over pure film_defect chips):")
            for r in sweep:
                print(f"  jitter {r['jitter_nm']:.4f} nm: rms_displacement {r['rms_displacement_nm']:.4f} nm "
                      f"(radial truth sqrt(2) x jitter = {np.sqrt(2) * r['jitter_nm']:.4f}), disorder "
                      f"{r['disorder']:.3f}, lattice_fraction {r['lattice_fraction']:.3f} ({r['chips']} chips; "
                      f"film_ordered {r['film_ordered_rms_nm']:.4f} nm)")
    return 0


def DEMO_NAME(i: int) -> str:  # noqa: N802 - a label for the printout
    from mmlake.synth import DEMO_CAMPAIGN

    s = DEMO_CAMPAIGN[i]
    return f"{s.sample}@{s.dose_key}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
