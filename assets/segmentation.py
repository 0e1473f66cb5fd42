"""Group `segmentation`: one asset per method (computed by one multi-asset step) and the agreement scores."""

import json

import numpy as np
import polars as pl
from dagster import AssetExecutionContext, AssetKey, AssetSpec, Config, MetadataValue, asset, multi_asset
from pydantic import Field

from assets.common import SessionPart, begin, png_md, table_md, write_result
from assets.features import eds_features, haadf_embeddings
from assets.partitions import session_partitions
from mmlake import plots
from mmlake.errors import LakeError, SessionError
from mmlake.features import (available_haadf_encoders, eds_composition, fill_missing, haadf_features,
                             load_grid, session_row)
from mmlake.encoders import auto_haadf_encoder
from mmlake.segment import modality_agreement, truth_scores
from mmlake.segment.session import METHODS, segment_session
from resources.lake import LakeResource

from mmlake.codeversion import module_code_version

SEGMENTATION_VERSION = module_code_version(__name__, "segmentation")
AGREEMENT_VERSION = module_code_version(__name__, "agreement")
DESCRIPTIONS = {
    "louvain": "Louvain community detection (python-louvain, fixed seed) on the chip graph: cosine similarity, "
               "edges above a statistic of the similarity histogram (mode by default); two modalities average "
               "their similarity matrices before thresholding.",
    "agglomerative": "Ward agglomerative clustering (scikit-learn) on per-modality standardised features, k "
                     "clusters; the ensemble is the preprint's vector vote.",
    "fewshot": "Few-shot prototypes from the manifest's support chips: softmax over negative Euclidean "
               "distances; two modalities average their class probabilities (0.5/0.5 by default).",
}


class SegmentationConfig(Config):
    """Options of the segmentation assets (each method reads the ones it uses)."""

    haadf_features: str = Field(default="auto", description="auto (vgg16 when its ImageNet weights ran, else the "
                                "first that ran of mmlake.encoders.AUTO_ORDER: ssl, effnet, fft) | vgg16 | ssl | effnet | fft")
    eds_features: str = Field(default="cl", description="cl (Cliff-Lorimer atomic %) | spectra (summed chip spectra)")
    threshold: str = Field(default="mode", description="Louvain: mode | median | mean | a number")
    weighted: bool = Field(default=True, description="Louvain: keep similarities as edge weights")
    seed: int = Field(default=0, description="random_state of Louvain")
    n_clusters: int = Field(default=0, description="Ward k; 0 = number of support classes, else 4")
    eds_weight: float = Field(default=0.5, description="few-shot: weight of EDS probabilities (preprint: 0.5, once 0.55)")
    auto_weights: bool = Field(default=True, description="also compute the ground-truth-free weighted ensemble")

    def method_options(self) -> dict:
        threshold = self.threshold
        try:
            threshold = float(threshold)
        except ValueError:
            pass
        return {"threshold": threshold, "weighted": self.weighted, "seed": self.seed,
                "n_clusters": self.n_clusters or None,
                "modality_weights": {"haadf": 1 - self.eds_weight, "eds": self.eds_weight}}


def load_modalities(lk, sid: str, config: SegmentationConfig) -> tuple[dict[str, np.ndarray], dict]:
    """The feature matrix of each modality present, and a record of what was chosen."""
    feats, chosen = {}, {}
    encoders = available_haadf_encoders(lk, sid)
    want = config.haadf_features
    if want == "auto":
        want = auto_haadf_encoder(encoders)
    if want in encoders:
        feats["haadf"] = haadf_features(lk, sid, want)
        chosen["haadf"] = want
    if config.eds_features == "spectra":
        grid_row, _ = load_grid(lk, sid)
        if grid_row["eds_sums_sha"] is not None:
            feats["eds"] = lk.get_array(grid_row["eds_sums_sha"]).astype(np.float64)
            chosen["eds"] = "spectra"
    else:
        comp = eds_composition(lk, sid)
        if comp is not None:
            values, elements = comp
            feats["eds"], n_filled = fill_missing(values)
            chosen["eds"] = {"features": "cl_atomic_percent", "elements": elements, "chips_without_counts": n_filled}
    for modality in list(feats):  # a modality without contrast (e.g. a flat image) cannot vote
        if not np.any(np.ptp(feats[modality], axis=0) > 0):
            del feats[modality]
            chosen[modality] = {"dropped": "all chips have identical features in this modality"}
    if not feats:
        raise SessionError(sid, f"nothing to segment: {chosen or 'no features'}; HAADF encoders present: "
                                f"{encoders or 'none'}. Materialize haadf_embeddings / eds_features, or check "
                                "that the session's images and spectra have contrast")
    return feats, chosen


def support_indices(manifest: dict, n_cols: int) -> dict[str, list[int]]:
    return {cls: [r * n_cols + c for r, c in chips] for cls, chips in (manifest.get("support") or {}).items()}


def segmentation_inputs(context, lk, sid: str, config: SegmentationConfig) -> dict:
    """What every method reads for one session (read once, shared by the methods of one step)."""
    with lk.reading():  # one connection for the step's reads
        grid_row, grid = load_grid(lk, sid)
        sess = session_row(lk, sid)
        feats, chosen = load_modalities(lk, sid, config)
    haadf = grid.untile(lk.get_array(grid_row["haadf_stack_sha"])) if grid_row["haadf_stack_sha"] else None
    for modality, why in chosen.items():
        if isinstance(why, dict) and "dropped" in why:
            context.log.warning(f"{sid}: modality {modality} left out: {why['dropped']}")
    return {"grid": grid, "manifest": sess["manifest"], "feats": feats, "chosen": chosen, "haadf": haadf}


def segment_one(context, sid: str, method: str, config: SegmentationConfig, inputs: dict) -> SessionPart:
    """One session's labels for one method (all modalities and ensembles), from `segmentation_inputs`."""
    grid, feats, chosen, haadf = inputs["grid"], inputs["feats"], inputs["chosen"], inputs["haadf"]
    # every method gets the support chips: few-shot's prototypes, Ward's k, Louvain/Ward weight choice
    support = support_indices(inputs["manifest"], grid.n_cols) or None
    if method == "fewshot" and not support:
        context.log.warning(f"{sid}: few-shot skipped: session.yaml has no 'support' chips")
        return SessionPart({"segment_labels": pl.DataFrame(), "segment_runs": pl.DataFrame()},
                           {"method": method, "skipped": "no support"},
                           {"skipped": MetadataValue.text("no 'support' chips in session.yaml: add class -> "
                                                          "[[row, col], ...] to run few-shot")})
    options = config.method_options()
    try:
        results = segment_session(method, feats, options, support, auto_weights=config.auto_weights)
    except ValueError as exc:
        raise SessionError(sid, f"{method}: {exc}") from exc
    labels, runs = [], []
    for res in results:
        n = len(res.labels)
        frame = {"session_id": sid, "method": method, "modality": res.modality,
                 "chip_index": np.arange(n, dtype=np.int32), "label": res.labels.astype(np.int32)}
        if res.proba is not None:
            frame["proba"] = pl.Series(np.asarray(res.proba, dtype=np.float32).tolist(), dtype=pl.List(pl.Float32))
        labels.append(pl.DataFrame(frame))
        runs.append({"session_id": sid, "method": method, "modality": res.modality,
                     "n_labels": int(res.labels.max()) + 1, "features": json.dumps(chosen.get(res.modality, chosen)),
                     "class_names": res.class_names or None, "params": json.dumps(res.params, default=str)})
    runs_frame = pl.DataFrame(runs, schema_overrides={"class_names": pl.List(pl.Utf8)})
    png = plots.segmentation_overlay(haadf, {(method, r.modality): r.labels for r in results}, grid, f"{sid} {method}")
    meta = {"labels": table_md(runs_frame.select("modality", "n_labels")), "overlay": png_md(png, method)}
    if method == "fewshot":
        meta["label_next"] = _label_next(results, grid, support)
    return SessionPart(
        {"segment_labels": pl.concat(labels, how="diagonal"), "segment_runs": runs_frame},
        json.loads(json.dumps({"method": method, **options, "features": chosen, "auto_weights": config.auto_weights},
                              default=str)),
        meta)


def _label_next(results, grid, support) -> MetadataValue:
    """The chips to label next (mmlake.suggest) from the few-shot ensemble's probabilities, as a table;
    the same list as `mmlake suggest SESSION`."""
    from mmlake.suggest import suggest_chips

    pick = next((r for r in results if r.modality == "ensemble" and r.proba is not None),
                next((r for r in results if r.proba is not None), None))
    if pick is None:
        return MetadataValue.text("no class probabilities")
    sug = suggest_chips(pick.proba, (grid.n_rows, grid.n_cols), support, 8, class_names=pick.class_names or None)
    return table_md(pl.DataFrame([{"row": s.row, "col": s.col, "chip_index": s.chip_index, "uncertainty": s.score,
                                   "top": f"{s.top_class} {s.top_p:.2f}", "second": f"{s.second_class} {s.second_p:.2f}"}
                                  for s in sug]), 8) if sug else MetadataValue.text("no chip to suggest")


SEGMENTATION_KEYS = {m: AssetKey(f"segmentation_{m}") for m in METHODS}


@multi_asset(
    name="segmentation", partitions_def=session_partitions, can_subset=True,
    specs=[AssetSpec(key, group_name="segmentation", code_version=SEGMENTATION_VERSION,
                     deps=[haadf_embeddings, eds_features], kinds={"scikitlearn", "duckdb"},
                     owners=["team:microscopy"],
                     description=DESCRIPTIONS[m] + " Labels per chip for modality haadf, eds and the "
                     "multi-modal ensemble (and ensemble_auto: fusion weight chosen without ground truth).")
           for m, key in SEGMENTATION_KEYS.items()],
)
def segmentation(context: AssetExecutionContext, config: SegmentationConfig, lake: LakeResource):
    """The three methods of a partition in one step (each still its own asset, provenance row and
    write transaction; select one to run it alone). Why one step: the methods read the same features,
    and Dagster's bookkeeping costs ~0.1 s a step, more than segmenting a small session. All methods
    compute first, then their writes follow each other on one connection. A method that fails does
    not stop the others; the step fails after the rest are written."""
    lk = lake.lake()
    methods = [m for m, key in SEGMENTATION_KEYS.items() if key in context.selected_asset_keys]
    with lk.reading():  # every method's upstream ids and current row, captured before any input is read
        steps = {m: begin(context, lk, ["haadf_embeddings", "eds_features"], asset_key=SEGMENTATION_KEYS[m].to_user_string())
                 for m in methods}
        sids = steps[methods[0]].session_ids if methods else []
        # read once, on the same connection (a SessionError here: no method can run)
        inputs = {sid: segmentation_inputs(context, lk, sid, config) for sid in sids}
    failures, results = [], {}
    for m in methods:  # every method computed before the first write, so the writes follow each other
        try:           # on the run's held connection (mmlake.heldwrite)
            results[m] = {sid: segment_one(context, sid, m, config, inputs[sid]) for sid in sids}
        except SessionError as exc:
            context.log.error(f"{steps[m].label}: segmentation_{m} failed: {exc}")
            failures.append(exc)
    for m, parts in results.items():  # one write transaction each, back to back on one connection
        try:
            yield write_result(context, steps[m], code_version=SEGMENTATION_VERSION, parts=parts,
                               table_scopes={t: {"method": m} for t in ("segment_labels", "segment_runs")})
        except (SessionError, LakeError) as exc:
            context.log.error(f"{steps[m].label}: segmentation_{m} failed: {exc}")
            failures.append(exc)
    if failures:
        raise failures[0]



@asset(
    partitions_def=session_partitions, group_name="segmentation", code_version=AGREEMENT_VERSION,
    deps=list(SEGMENTATION_KEYS.values()), kinds={"scikitlearn", "duckdb"}, owners=["team:microscopy"],
    description="Adjusted mutual information between modality pairs per method (the preprint's Table I) and, "
                "where the session has ground truth, AMI and ARI of every labelling against it.",
)
def agreement(context: AssetExecutionContext, lake: LakeResource):
    lk = lake.lake()
    step = begin(context, lk, [k.to_user_string() for k in SEGMENTATION_KEYS.values()], read=_agreement_inputs)
    parts = {sid: _agreement_one(sid, *step.inputs[sid]) for sid in step.session_ids}
    return write_result(context, step, code_version=AGREEMENT_VERSION, parts=parts)


def _agreement_inputs(lk, sid: str) -> tuple[pl.DataFrame, pl.Series]:
    frame = lk.query("select method, modality, label from segment_labels where session_id = ? "
                     "order by method, modality, chip_index", [sid])
    truth = lk.query("select truth_label from chips where session_id = ? order by chip_index", [sid])["truth_label"]
    return frame, truth


def _agreement_one(sid: str, frame: pl.DataFrame, truth: pl.Series) -> SessionPart:
    has_truth = truth.null_count() == 0 and len(truth) > 0
    rows = []
    for (method,), part in frame.group_by(["method"], maintain_order=True):
        labels = {m: g["label"].to_numpy() for (m,), g in part.group_by(["modality"], maintain_order=True)}
        ordered = {m: labels[m] for m in ("haadf", "eds", "ensemble") if m in labels}
        if len(ordered) >= 2:
            for r in modality_agreement(ordered):
                rows.append({"session_id": sid, "method": method, "pair": f"{r['modality_a']}-{r['modality_b']}",
                             "ami": r["ami"], "ari": None})
        if has_truth:
            for m, lab in labels.items():
                s = truth_scores(lab, truth.to_numpy())
                rows.append({"session_id": sid, "method": method, "pair": f"{m}-truth", "ami": s["ami"], "ari": s["ari"]})
    table = pl.DataFrame(rows, schema={"session_id": pl.Utf8, "method": pl.Utf8, "pair": pl.Utf8,
                                       "ami": pl.Float64, "ari": pl.Float64})
    png = plots.agreement_heatmap(table.filter(~pl.col("pair").str.ends_with("truth")), f"{sid} agreement")
    return SessionPart({"agreement": table}, {"average_method": "arithmetic"},
                       {"table": table_md(table, 30), "heatmap": png_md(png)})
