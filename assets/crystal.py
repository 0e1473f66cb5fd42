"""Group `crystal`: the UniMat-style campaign (XRD + composition embeddings, aligned and fused).

Unpartitioned: one run covers one dataset (a CDVAE-layout CSV or folder of train/val/test CSVs),
named by `CrystalDatasetResource`; every table is scoped by that dataset name.
"""

from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, ConfigurableResource, MetadataValue, asset
from pydantic import Field

from assets.common import begin, table_md, write_rows
from mmlake.codeversion import module_code_version
from mmlake.crystal.pipeline import (CODE_VERSION, crystal_benchmark_stage, crystal_encoders_stage,
                                     crystal_reference_spacings_stage, composition_features_stage,
                                     encoders_from_table, structures_stage, xrd_patterns_stage)
from mmlake.crystal.reference import reference_table
from mmlake.crystal.structures import DEFAULT_DATA
from resources.encoder import EncoderResource
from resources.lake import LakeResource


class CrystalDatasetResource(ConfigurableResource):
    """Which structures the crystal group runs on. Default: the shared MP-20 excerpt."""

    path: str = Field(default="", description="CDVAE-layout CSV, or a folder of train/val/test CSVs")
    name: str = Field(default="", description="dataset name in the lake (default: the folder/file stem)")
    epochs: int = Field(default=100, description="training epochs per model")

    def resolved(self) -> tuple[Path, str]:
        path = Path(self.path) if self.path else DEFAULT_DATA
        return path, self.name or path.stem

    def params(self) -> dict:
        return {"train": {"epochs": self.epochs}}


def _progress(context):
    def report(stage: str, done: int, total: int) -> None:
        if done == total or done % max(1, total // 4) == 0:
            context.log.info(f"{stage}: {done}/{total}")
    return report


def _stored_structures(lk, dataset: str):
    from mmlake.crystal.structures import structures_from_table

    return structures_from_table(lk.query("select * from structures where dataset = ?", [dataset]))


def _load(lk, dataset: str):
    """Structures, XRD patterns and composition features of a dataset, rebuilt from the lake."""
    from mmlake.crystal.composition import CompositionFeatures
    from mmlake.crystal.xrd import XRDPatterns

    st = _stored_structures(lk, dataset)
    xdf = lk.query("select * from xrd_patterns where dataset = ?", [dataset])
    xr = XRDPatterns.from_table(xdf, lk.get_array(xdf["pattern_matrix_sha"][0]))
    cf = CompositionFeatures.from_table(lk.query("select * from composition_features where dataset = ?", [dataset]))
    return st, xr, cf


# derived from the code (this module and the mmlake.crystal modules it imports), not the hand-kept
# pipeline constant, so an edit to any stage makes the crystal assets stale
CODE_VERSION = module_code_version(__name__, "crystal")
COMMON = dict(group_name="crystal", code_version=CODE_VERSION, owners=["team:materials"])


@asset(**COMMON, kinds={"pymatgen", "duckdb"},
       description="Structures of a CDVAE-layout CSV parsed with pymatgen: formula, elements, Niggli lattice, space "
                   "group and crystal system (spglib), split and targets. Bad CIF rows are kept with a skip_reason.")
def structures(context: AssetExecutionContext, lake: LakeResource, crystal_dataset: CrystalDatasetResource):
    lk = lake.lake()
    step = begin(context, lk, [])
    path, ds = crystal_dataset.resolved()
    st = structures_stage(path, None, _progress(context))
    for row, mid, why in st.skipped:
        context.log.warning(f"row {row} ({mid}) skipped: {why}")
    for task, why in st.tasks.items():
        if why:
            context.log.warning(f"task {task} unavailable: {why}")
    return write_rows(context, step, code_version=CODE_VERSION, parameters={"path": str(path), "dataset": ds},
                        tables={"structures": st.table(ds)}, scope={"dataset": ds},
                        metadata={"parsed": MetadataValue.int(len(st.frame)),
                                  "skipped": MetadataValue.int(len(st.skipped)),
                                  "summary": MetadataValue.json(st.summary())})


@asset(**COMMON, deps=[structures], kinds={"pymatgen", "numpy"},
       description="Cu K-alpha XRD patterns (pymatgen XRDCalculator), Gaussian-smeared (sigma 0.3 deg) onto an "
                   "even 2-theta grid 0-90 deg, normalised; the pattern matrix is an .npy object in the lake.")
def xrd_patterns(context: AssetExecutionContext, lake: LakeResource, crystal_dataset: CrystalDatasetResource):
    lk, (_, ds) = lake.lake(), crystal_dataset.resolved()
    step = begin(context, lk, ["structures"])
    st = _stored_structures(lk, ds)
    xr = xrd_patterns_stage(st, None, _progress(context))
    sha = lk.put_array(xr.patterns)
    return write_rows(context, step, code_version=CODE_VERSION, parameters={"dataset": ds, "grid_points": xr.patterns.shape[1]},
                        tables={"xrd_patterns": xr.table(ds, sha)}, scope={"dataset": ds},
                        metadata={"patterns": MetadataValue.int(len(xr.patterns)), "failed": MetadataValue.int(len(xr.failed))})


@asset(**COMMON, deps=[structures], kinds={"pymatgen"},
       description="Magpie-style statistics (mean, deviation, min, max, range, mode) of elemental properties from "
                   "pymatgen's element data; missing properties imputed and reported.")
def composition_features(context: AssetExecutionContext, lake: LakeResource, crystal_dataset: CrystalDatasetResource):
    lk, (_, ds) = lake.lake(), crystal_dataset.resolved()
    step = begin(context, lk, ["structures"])
    st = _stored_structures(lk, ds)
    cf = composition_features_stage(st, None, _progress(context))
    return write_rows(context, step, code_version=CODE_VERSION, parameters={"dataset": ds},
                        tables={"composition_features": cf.table(ds), "composition_feature_names": cf.names_table(ds)},
                        scope={"dataset": ds}, metadata={"features": MetadataValue.int(cf.features.shape[1])})


@asset(**COMMON, deps=[xrd_patterns, composition_features], kinds={"pytorch"}, pool="gpu",
       description="1D-CNN XRD encoder and MLP composition encoder aligned with the symmetric CLIP loss (UniMat "
                   "Eq. 1), concatenation fusion with a 3-layer MLP, heads for lattice lengths, angles, formation "
                   "energy and crystal system; trained weights stored content-addressed, seeds fixed.")
def crystal_encoders(context: AssetExecutionContext, lake: LakeResource, encoder: EncoderResource,
                     crystal_dataset: CrystalDatasetResource):
    lk, (_, ds) = lake.lake(), crystal_dataset.resolved()
    step = begin(context, lk, ["xrd_patterns", "composition_features"])
    st, xr, cf = _load(lk, ds)
    device = encoder.resolved_device()
    enc = crystal_encoders_stage(st, xr, cf, device, crystal_dataset.params(), _progress(context))
    for data in enc.weights().values():
        lk.put_bytes(data, ".pt")
    table = enc.table(ds)
    return write_rows(context, step, code_version=CODE_VERSION, parameters={"dataset": ds, **crystal_dataset.params()},
                        tables={"crystal_models": table},
                        scope={"dataset": ds}, device=device,
                        weights=";".join(f"{v}={m.sha256}" for v, m in enc.models.items()),
                        metadata={"models": table_md(table.select("variant", "best_epoch", "best_val_task_loss",
                                                                  "train_seconds"))})


@asset(**COMMON, deps=[crystal_encoders], kinds={"pytorch", "duckdb"},
       description="The UniMat comparison on the held-out split: XRD only, composition only, aligned+fused -- "
                   "lattice length/angle MAE, formation-energy MAE, crystal-system accuracy (per system: Table 3), "
                   "embedding silhouette -- next to the preprint's Table 2.")
def crystal_benchmark(context: AssetExecutionContext, lake: LakeResource, encoder: EncoderResource,
                      crystal_dataset: CrystalDatasetResource):
    lk, (_, ds) = lake.lake(), crystal_dataset.resolved()
    step = begin(context, lk, ["crystal_encoders"])
    st, xr, cf = _load(lk, ds)
    models = lk.query("select * from crystal_models where dataset = ?", [ds])
    weights = {sha: lk.find_object(sha).read_bytes() for sha in models["weights_sha256"]}
    enc = encoders_from_table(models, weights)
    bm = crystal_benchmark_stage(st, xr, cf, enc, encoder.resolved_device(), crystal_dataset.params())
    return write_rows(context, step, code_version=CODE_VERSION, parameters={"dataset": ds},
                        tables={"crystal_benchmark": bm.table(ds)},
                        scope={"dataset": ds},
                        metadata={"vs_preprint_table2": table_md(bm.side_by_side, 12),
                                  "per_crystal_system": table_md(bm.per_system, 8)})


@asset(**COMMON, deps=[structures], kinds={"pymatgen"},
       description="Reference interplanar spacings d(hkl) of known phases (LaFeO3, SrTiO3, ...) from pymatgen "
                   "structures, for the view that sets them beside STEM FFT d-spacings.")
def crystal_reference_spacings(context: AssetExecutionContext, lake: LakeResource,
                               crystal_dataset: CrystalDatasetResource):
    lk, (_, ds) = lake.lake(), crystal_dataset.resolved()
    step = begin(context, lk, ["structures"])
    st = _stored_structures(lk, ds)
    table = reference_table(crystal_reference_spacings_stage(st), ds)
    return write_rows(context, step, code_version=CODE_VERSION, parameters={"dataset": ds},
                        tables={"crystal_reference_spacings": table},
                        scope={"dataset": ds}, metadata={"spacings": table_md(table, 12)})


CRYSTAL_ASSETS = [structures, xrd_patterns, composition_features, crystal_encoders, crystal_benchmark,
                  crystal_reference_spacings]
