"""One function per crystal asset; each takes the previous stage's output and returns the next.

    structures_stage(csv_path)                               -> StructureSet
    xrd_patterns_stage(structures)                           -> XRDPatterns
    composition_features_stage(structures)                   -> CompositionFeatures
    crystal_encoders_stage(structures, xrd, comp, device)    -> CrystalEncoders
    crystal_benchmark_stage(structures, xrd, comp, encoders) -> BenchmarkResult
    crystal_reference_spacings_stage(structures)             -> pl.DataFrame
    run_crystal_pipeline(csv_path, device, params, progress) -> CrystalPipelineResult (all + timings)

Every result has `.table(dataset)` giving the frame for its lake table (sql/schema.sql) minus
`materialization_id`, and a `from_table` path back (structures_from_table, XRDPatterns.from_table(table, matrix),
CompositionFeatures.from_table, encoders_from_table(models_table, {sha: bytes})), so thin Dagster
assets can reload upstream outputs from the lake.

params (all optional), as a dict or CrystalParams:
    {"structures": {"symprec", "angle_tolerance", "resplit", "limit"},
     "xrd": {"wavelength", "sigma_deg", "two_theta_min", "two_theta_max", "step_deg"},
     "composition": {"missing"},
     "train": {TrainParams fields}, "variants": ["xrd", "composition", "fused"],
     "benchmark": {"split"}, "reference": {"phases", "max_index"}}
progress: callable(stage: str, done: int, total: int) or None.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import polars as pl

from mmlake.crystal.composition import CompositionFeatures, composition_features
from mmlake.crystal.reference import reference_spacings
from mmlake.crystal.structures import StructureSet, load_structures
from mmlake.crystal.xrd import XRDParams, XRDPatterns, simulate_patterns

Progress = Callable[[str, int, int], None]
CODE_VERSION = "crystal-1"


@dataclass
class CrystalParams:
    structures: dict[str, Any] = field(default_factory=dict)
    xrd: dict[str, Any] = field(default_factory=dict)
    composition: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    variants: tuple[str, ...] = ("xrd", "composition", "fused")
    benchmark: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def coerce(cls, params: "CrystalParams | Mapping | None") -> "CrystalParams":
        if params is None:
            return cls()
        if isinstance(params, cls):
            return params
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"params: unknown sections {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        p = cls(**{k: v for k, v in params.items()})
        p.variants = tuple(p.variants)
        return p

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["variants"] = list(self.variants)
        return d


def check_device(device: str) -> str:
    import torch

    dev = str(device)
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device='cpu'")
    if not (dev == "cpu" or dev.startswith("cuda")):
        raise ValueError(f"device must be 'cpu' or 'cuda[:n]', got {device!r}")
    return dev


# ---------------------------------------------------------------------------------------------- stages
def structures_stage(csv_path=None, params=None, progress: Progress | None = None) -> StructureSet:
    p = CrystalParams.coerce(params)
    return load_structures(csv_path, progress=progress, **p.structures)


def xrd_patterns_stage(structures: StructureSet, params=None, progress: Progress | None = None) -> XRDPatterns:
    p = CrystalParams.coerce(params)
    return simulate_patterns(structures.frame, XRDParams(**p.xrd), progress=progress)


def composition_features_stage(structures: StructureSet, params=None,
                               progress: Progress | None = None) -> CompositionFeatures:
    p = CrystalParams.coerce(params)
    return composition_features(structures.frame, progress=progress, **p.composition)


@dataclass
class CrystalEncoders:
    models: dict[str, Any]  # variant -> TrainedModel
    arrays: Any  # CrystalArrays the models were trained on
    tasks: dict[str, str | None]

    def weights(self) -> dict[str, bytes]:
        """variant -> torch.save bytes (store with Lake.put_bytes(b, '.pt'); its sha is TrainedModel.sha256)."""
        return {v: m.weights for v, m in self.models.items()}

    def table(self, dataset: str) -> pl.DataFrame:
        rows = []
        for v, m in self.models.items():
            val = [h["val_task"] for h in m.history if "val_task" in h]
            rows.append({
                "dataset": dataset, "variant": v, "model_name": m.name, "model_version": m.version,
                "weights_sha256": m.sha256, "weights_bytes": len(m.weights), "params": json.dumps(m.params),
                "seed": int(m.params["seed"]), "device": m.device, "n_train": m.n_train,
                "epochs_run": len(m.history), "best_epoch": m.best_epoch,
                "best_val_task_loss": float(min(val)) if val else None,
                "final_train_loss": float(m.history[-1]["loss"]), "train_seconds": float(m.seconds),
                "tasks": json.dumps(self.tasks), "history": json.dumps(m.history),
            })
        return pl.DataFrame(rows, schema_overrides={"best_val_task_loss": pl.Float64})


def encoders_from_table(table: pl.DataFrame, weights: Mapping[str, bytes],
                        tasks: Mapping[str, str | None] | None = None) -> CrystalEncoders:
    """Rebuild CrystalEncoders from `crystal_models` rows and their weight bytes (sha256 -> bytes,
    e.g. {sha: lake.find_object(sha).read_bytes()}); arrays are re-assembled by the benchmark stage."""
    from mmlake.crystal.models import model_from_bytes, weights_sha256
    from mmlake.crystal.train import TrainedModel

    models = {}
    for r in table.iter_rows(named=True):
        data = weights[r["weights_sha256"]]
        if weights_sha256(data) != r["weights_sha256"]:
            raise ValueError(f"weights: bytes given for {r['weights_sha256'][:12]} hash to something else")
        models[r["variant"]] = TrainedModel(
            variant=r["variant"], model=model_from_bytes(data), weights=data, sha256=r["weights_sha256"],
            params=json.loads(r["params"]), history=json.loads(r["history"]), best_epoch=r["best_epoch"],
            seconds=r["train_seconds"], n_train=r["n_train"], device=r["device"])
    tasks = dict(tasks) if tasks is not None else (json.loads(table["tasks"][0]) if len(table) else {})
    return CrystalEncoders(models=models, arrays=None, tasks=tasks)


def crystal_encoders_stage(structures: StructureSet, xrd: XRDPatterns, comp: CompositionFeatures, device: str = "cpu",
                           params=None, progress: Progress | None = None) -> CrystalEncoders:
    """Train the single-modality and the aligned+fused models on the train split (select on val)."""
    from mmlake.crystal.train import TrainParams, assemble, train_model

    p = CrystalParams.coerce(params)
    dev = check_device(device)
    arr = assemble(structures.frame, xrd, comp, energy_available=structures.tasks.get("formation_energy") is None)
    tp = TrainParams(**p.train)
    models = {v: train_model(arr, v, tp, device=dev, progress=progress) for v in p.variants}
    return CrystalEncoders(models=models, arrays=arr, tasks=dict(structures.tasks))


def crystal_benchmark_stage(structures: StructureSet, xrd: XRDPatterns, comp: CompositionFeatures,
                            encoders: CrystalEncoders, device: str = "cpu", params=None,
                            progress: Progress | None = None):
    """Held-out metrics (Tables 2/3 layout) next to the preprint's numbers."""
    from mmlake.crystal.benchmark import run_benchmark
    from mmlake.crystal.train import assemble

    p = CrystalParams.coerce(params)
    arr = encoders.arrays if encoders.arrays is not None else assemble(
        structures.frame, xrd, comp, energy_available=structures.tasks.get("formation_energy") is None)
    res = run_benchmark(encoders.models, arr, device=check_device(device), **p.benchmark)
    if progress is not None:
        progress("crystal_benchmark", 1, 1)
    return res


def crystal_reference_spacings_stage(structures: StructureSet | None = None, params=None) -> pl.DataFrame:
    p = CrystalParams.coerce(params)
    return reference_spacings(structures=structures.frame if structures is not None else None, **p.reference)


# ---------------------------------------------------------------------------------------------- all
@dataclass
class CrystalPipelineResult:
    structures: StructureSet
    xrd: XRDPatterns
    composition: CompositionFeatures
    encoders: CrystalEncoders
    benchmark: Any
    reference: pl.DataFrame
    timings: dict[str, float]
    params: dict[str, Any]


def run_crystal_pipeline(csv_path: str | Path | None = None, device: str = "cpu", params=None,
                         progress: Progress | None = None) -> CrystalPipelineResult:
    """Every stage in order, timed (seconds per stage in `timings`, plus `total`)."""
    p = CrystalParams.coerce(params)
    t: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(name, fn, *a, **k):
        s = time.perf_counter()
        out = fn(*a, **k)
        t[name] = time.perf_counter() - s
        return out

    st = lap("structures", structures_stage, csv_path, p, progress)
    xr = lap("xrd_patterns", xrd_patterns_stage, st, p, progress)
    co = lap("composition_features", composition_features_stage, st, p, progress)
    enc = lap("crystal_encoders", crystal_encoders_stage, st, xr, co, device, p, progress)
    for v, m in enc.models.items():
        t[f"train_{v}"] = m.seconds
    bm = lap("crystal_benchmark", crystal_benchmark_stage, st, xr, co, enc, device, p, progress)
    ref = lap("crystal_reference_spacings", crystal_reference_spacings_stage, st, p)
    t["total"] = time.perf_counter() - t0
    return CrystalPipelineResult(structures=st, xrd=xr, composition=co, encoders=enc, benchmark=bm, reference=ref,
                                 timings=t, params=p.as_dict())


def _main() -> None:  # python -m mmlake.crystal.pipeline [csv_path] [--device cuda] [--json params]
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv_path", nargs="?", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--params", default=None, help="JSON with the params sections")
    a = ap.parse_args()
    pl.Config.set_tbl_cols(20)
    pl.Config.set_tbl_width_chars(220)
    pl.Config.set_float_precision(3)

    def prog(stage, done, total):
        if done == total:
            print(f"[{time.strftime('%H:%M:%S')}] {stage} done ({total})", flush=True)

    r = run_crystal_pipeline(a.csv_path, a.device, json.loads(a.params) if a.params else None, prog)
    print(json.dumps(r.structures.summary(), indent=1, default=str))
    print("skipped:", r.structures.skipped[:5], "xrd failed:", r.xrd.failed[:5],
          "composition imputed:", r.composition.imputed, "skipped:", r.composition.skipped)
    print(r.benchmark.side_by_side)
    print(r.benchmark.per_system)
    print({k: round(v, 1) for k, v in r.timings.items()})
    print({v: m.sha256[:16] for v, m in r.encoders.models.items()})


if __name__ == "__main__":
    _main()
