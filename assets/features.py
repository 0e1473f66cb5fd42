"""Group `features`: HAADF chip embeddings (vgg16, fft) and EDS per-chip Cliff-Lorimer composition."""

import json
import time

import numpy as np
import polars as pl
from dagster import AssetExecutionContext, MetadataValue, asset

from assets.common import SessionPart, begin, png_md, write_result
from assets.ingest import chips
from assets.partitions import session_partitions
from mmlake import plots
from mmlake.encoders.vgg16 import WeightsUnavailableError
from mmlake.features import load_grid
from resources.encoder import EncoderResource
from resources.lake import LakeResource

from mmlake.codeversion import module_code_version

HAADF_EMBEDDINGS_VERSION = module_code_version(__name__, "haadf_embeddings")
EDS_FEATURES_VERSION = module_code_version(__name__, "eds_features")


def _status_row(sid, feature_set, modality, status, reason=None, **extra) -> dict:
    return {"session_id": sid, "feature_set": feature_set, "modality": modality, "status": status,
            "reason": reason, **extra}


@asset(
    partitions_def=session_partitions, group_name="features", code_version=HAADF_EMBEDDINGS_VERSION,
    deps=[chips], kinds={"pytorch", "duckdb"}, owners=["team:microscopy"], pool="gpu",
    description="One vector per chip per HAADF encoder: `vgg16` (ImageNet VGG16, 32x32 chips, last conv "
                "block = 512-d, as the preprint) and `fft` (binned log power spectrum + crystallinity and "
                "lattice period; needs no weights). Runs batched on the EncoderResource device.",
)
def haadf_embeddings(context: AssetExecutionContext, lake: LakeResource, encoder: EncoderResource):
    lk = lake.lake()
    step = begin(context, lk, ["chips"], read=load_grid)
    parts = {sid: _embed_session(context, lk, encoder, sid, *step.inputs[sid]) for sid in step.session_ids}
    return write_result(context, step, code_version=HAADF_EMBEDDINGS_VERSION, parts=parts,
                        table_scopes={"feature_sets": {"modality": "haadf"}})


def _build(encoder: EncoderResource, lk, sid: str, name: str):
    """The encoder `name`; `ssl` without a configured checkpoint uses the campaign's newest trained model
    (asset `ssl_encoder`), and is skipped with the reason when there is none."""
    if name == "ssl" and not encoder.ssl_weights:
        from assets.encoders import campaign_ssl_checkpoint
        from mmlake.encoders import get_encoder

        ck = campaign_ssl_checkpoint(lk, sid)
        if ck is None:
            raise WeightsUnavailableError("no ssl model trained for this session's campaign: materialize the "
                                          "`ssl_encoder` asset, then haadf_embeddings again (or set ssl_weights)")
        return get_encoder("ssl", checkpoint=ck)
    return encoder.build(name)


def _embed_session(context, lk, encoder: EncoderResource, sid: str, grid_row, grid) -> SessionPart:
    device = encoder.resolved_device()
    status, vectors, meta, weights = [], [], {}, []
    if grid_row["haadf_stack_sha"] is None:
        status = [_status_row(sid, name, "haadf", "absent", "session has no HAADF image")
                  for name in encoder.haadf_encoders]
    else:
        stack = lk.get_array(grid_row["haadf_stack_sha"])
        image = grid.untile(stack)
        for name in encoder.haadf_encoders:
            try:
                enc = _build(encoder, lk, sid, name)
            except WeightsUnavailableError as exc:
                context.log.warning(f"{sid}: {name} skipped: {exc}")
                status.append(_status_row(sid, name, "haadf", "skipped", str(exc)))
                continue
            t0 = time.perf_counter()
            vec = enc.encode(stack, batch_size=encoder.batch_size, device=device, image=image)
            rate = len(vec) / max(time.perf_counter() - t0, 1e-9)
            context.log.info(f"{sid}: {name} encoded {len(vec)} chips on {device} at {rate:.0f} chips/s")
            vectors.append(pl.DataFrame({"session_id": sid, "encoder": name,
                                         "chip_index": np.arange(len(vec), dtype=np.int32),
                                         "vector": pl.Series(vec.astype(np.float32).tolist(),
                                                             dtype=pl.List(pl.Float32))}))
            status.append(_status_row(sid, name, "haadf", "ok", dim=enc.dim, n_chips=len(vec),
                                      encoder_version=enc.version, weights=enc.weights_id, device=device,
                                      chips_per_s=rate, feature_names=getattr(enc, "feature_names", None)))
            weights.append(f"{name}={enc.weights_id}")
            meta[f"{name}_chips_per_s"] = MetadataValue.float(round(rate, 1))
            meta[f"{name}_pca"] = png_md(plots.pca_map(vec, grid.n_rows, grid.n_cols, f"{sid} {name}"), name)
    frames = {"feature_sets": pl.DataFrame(status, infer_schema_length=None),
              "haadf_embeddings": pl.concat(vectors) if vectors else pl.DataFrame()}
    # encoder identity and weights sha enter the data version (Provenance.weights), so installing the
    # VGG16 file gives new versions downstream; the weights *path* does not (the same file anywhere)
    return SessionPart(
        frames, {"encoders": list(encoder.haadf_encoders), "batch_size": encoder.batch_size,
                 "precision": encoder.precision, "ran": [r["feature_set"] for r in status if r["status"] == "ok"]},
        {"device": MetadataValue.text(device),
         "status": MetadataValue.md("\n".join(f"- {r['feature_set']}: {r['status']}"
                                              + (f" ({r['reason']})" if r.get("reason") else "")
                                              for r in status)), **meta},
        device=device, weights=";".join(weights) or None)


@asset(
    partitions_def=session_partitions, group_name="features", code_version=EDS_FEATURES_VERSION,
    deps=[chips], kinds={"exspy", "duckdb"}, owners=["team:microscopy"],
    description="Per chip: the EDS spectrum summed over the chip (from `chips`, cropped >= 0.2 keV) and "
                "exspy Cliff-Lorimer atomic percents of the session's elements plus the preprint's "
                "extraneous list, quantified for the whole chip grid at once (grid = navigation space). "
                "Chips without counts give NULL percents.",
)
def eds_features(context: AssetExecutionContext, lake: LakeResource):
    lk = lake.lake()
    step = begin(context, lk, ["chips"], read=_quantify_inputs)
    parts = {sid: _quantify_session(context, lk, sid, *step.inputs[sid]) for sid in step.session_ids}
    return write_result(context, step, code_version=EDS_FEATURES_VERSION, parts=parts,
                        table_scopes={"feature_sets": {"modality": "eds"}})


def _quantify_inputs(lk, sid: str):
    from mmlake.features import session_row

    return (*load_grid(lk, sid), session_row(lk, sid))


def _quantify_session(context, lk, sid: str, grid_row, grid, sess) -> SessionPart:
    from mmlake.eds import quantify_chips

    meta, tables = {}, {}
    if grid_row["eds_sums_sha"] is None:
        status = [_status_row(sid, "eds_cl", "eds", "absent", "session has no EDS spectrum image")]
        tables["eds_composition"] = pl.DataFrame()
        params = {}
    else:
        sums = lk.get_array(grid_row["eds_sums_sha"])
        t0 = time.perf_counter()
        res = quantify_chips(
            sums, grid_row["energy_offset_kev"], grid_row["energy_scale_kev"], sess["elements"],
            grid=(grid.n_rows, grid.n_cols), beam_energy_kev=sess["beam_kv"],
            energy_resolution_mnka_ev=sess["eds_resolution_mnka_ev"] or 130.0,
            kfactors=sess["manifest"].get("kfactors") or None, session=sid,
        )
        rate = len(sums) / max(time.perf_counter() - t0, 1e-9)
        n, m = res.atomic_percent.shape
        at = res.atomic_percent.astype(np.float64)
        tables["eds_composition"] = pl.DataFrame({
            "session_id": sid, "chip_index": np.repeat(np.arange(n, dtype=np.int32), m),
            "element": np.tile(np.array(res.elements), n), "line": np.tile(np.array(res.lines), n),
            "atomic_percent": pl.Series(at.ravel(), nan_to_null=True),
            "intensity": res.intensities.astype(np.float64).ravel(),
        })
        n_empty = int(np.isnan(at).all(axis=1).sum())
        params = res.provenance()
        status = [_status_row(sid, "eds_cl", "eds", "ok", dim=m, n_chips=n, encoder_version=params["method_version"],
                              chips_per_s=rate, feature_names=list(res.elements),
                              details=json.dumps(params, default=str))]
        context.log.info(f"{sid}: Cliff-Lorimer on {n} chips ({rate:.0f} chips/s); {n_empty} chips without counts")
        mean = {el: float(np.nanmean(at[:, i])) for i, el in enumerate(res.elements)}
        meta = {"chips_per_s": MetadataValue.float(round(rate, 1)),
                "chips_without_counts": MetadataValue.int(n_empty),
                "mean_atomic_percent": MetadataValue.json({k: round(v, 2) for k, v in mean.items()}),
                "composition_map": png_md(plots.element_maps(at, list(res.elements), grid.n_rows, grid.n_cols, sid))}
    tables["feature_sets"] = pl.DataFrame(status, infer_schema_length=None)
    return SessionPart(tables, json.loads(json.dumps(params, default=str)), meta)
