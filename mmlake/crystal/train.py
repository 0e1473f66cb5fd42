"""Training of the crystal models: seeded, deterministic on CPU, weights as bytes + sha256.

Loss per batch (all regression targets standardised with the training split's mean/std):
    task = w_len * L1(lengths) + w_ang * L1(angles) + w_e * L1(energy; rows with a target only)
           + w_cs * CE(crystal system)
    fused variant: + clip_weight * clip_loss(z_xrd, z_comp)   (UniMat "align + fuse")
Optionally `align_epochs` of CLIP-only pre-training of the two encoders come first (fused only).
The model kept is the one with the lowest validation task loss (`val` split; the last epoch when
there is no val split). Batches come from a torch.Generator seeded with `seed`; the global torch seed
is set before initialisation; deterministic algorithms are switched on for the run and restored.
CPU training uses 1 torch thread by default (`num_threads`): on 2 shared, busy cores OpenMP's
spin-waiting made 2 threads 10-100x slower than 1.

Strain augmentation (`strain_augment`, default 0.1; not in the preprint, whose Discussion names
augmentation as future work): each training sample of an XRD-consuming variant is seen as the same
crystal isotropically scaled by s ~ U[1 - eps, 1 + eps]: the pattern is warped exactly as Bragg's law
moves the peaks and the length targets are multiplied by s (angles, class and energy kept). On the
847-structure excerpt it cut the XRD-only lattice-length MAE from ~1.20 to ~0.85-0.93 Å.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from mmlake.crystal.models import VARIANTS, CrystalNet, clip_loss, weights_sha256, weights_to_bytes

Progress = Callable[[str, int, int], None]
CODE_VERSION = "crystal-train-1"


@dataclass
class CrystalArrays:
    """Inputs and targets aligned by material_id (the rows common to structures, XRD and composition)."""

    material_id: list[str]
    split: np.ndarray  # str
    xrd: np.ndarray  # (n, n_points) float32
    comp: np.ndarray  # (n, n_features) float32
    lengths: np.ndarray  # (n, 3)
    angles: np.ndarray  # (n, 3)
    energy: np.ndarray  # (n,) NaN where missing
    crystal_system: np.ndarray  # (n,) int64
    energy_available: bool = True
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (material_id, why)
    two_theta: np.ndarray | None = None  # the XRD grid (deg), for strain augmentation

    def subset(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)


def assemble(structures: pl.DataFrame, xrd, comp, *, energy_available: bool = True) -> CrystalArrays:
    """Join the structures frame, XRDPatterns and CompositionFeatures on material_id (structure order)."""
    xi = dict(zip(xrd.frame["material_id"].to_list(), xrd.frame["row_index"].to_list()))
    ci = {m: i for i, m in enumerate(comp.frame["material_id"].to_list())}
    mids, rx, rc, keep, dropped = [], [], [], [], []
    for k, m in enumerate(structures["material_id"].to_list()):
        if m not in xi:
            dropped.append((m, "no XRD pattern"))
        elif m not in ci:
            dropped.append((m, "no composition features"))
        else:
            mids.append(m)
            rx.append(xi[m])
            rc.append(ci[m])
            keep.append(k)
    f = structures[keep]
    e = f["energy_target"].to_numpy().astype(np.float64) if energy_available else np.full(len(f), np.nan)
    return CrystalArrays(
        material_id=mids, split=f["split"].to_numpy().astype(str),
        xrd=np.asarray(xrd.patterns[rx], dtype=np.float32), comp=np.asarray(comp.features[rc], dtype=np.float32),
        lengths=f.select("a", "b", "c").to_numpy().astype(np.float32),
        angles=f.select("alpha", "beta", "gamma").to_numpy().astype(np.float32),
        energy=np.where(np.isfinite(e), e, np.nan).astype(np.float32),
        crystal_system=f["crystal_system_index"].to_numpy().astype(np.int64),
        energy_available=energy_available and bool(np.isfinite(e).any()), dropped=dropped,
        two_theta=np.asarray(xrd.two_theta, dtype=np.float64),
    )


@dataclass
class TrainParams:
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.1
    clip_variant: str = "eq1"
    clip_weight: float = 0.1
    align_epochs: int = 0
    emb_dim: int = 128
    hidden: int = 256
    dropout: float = 0.1
    xrd_channels: tuple[int, ...] = (16, 16, 32, 32, 64)
    xrd_transform: str = "sqrt"
    w_lengths: float = 1.0
    w_angles: float = 1.0
    w_energy: float = 1.0
    w_crystal_system: float = 1.0
    strain_augment: float = 0.1  # XRD variants: random isotropic strain |eps| <= this per sample (0 = off)
    seed: int = 0
    num_threads: int | None = 1  # CPU: 1 thread (OpenMP spin-waits crawl on busy shared cores); None = torch default

    def __post_init__(self):
        for k in ("epochs", "batch_size"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (batch norm and the contrastive loss need pairs)")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        self.xrd_channels = tuple(self.xrd_channels)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["xrd_channels"] = list(self.xrd_channels)
        return d


@dataclass
class TrainedModel:
    variant: str
    model: CrystalNet  # on CPU, eval mode, best validation state
    weights: bytes
    sha256: str
    params: dict[str, Any]
    history: list[dict[str, float]]
    best_epoch: int
    seconds: float
    n_train: int
    device: str

    @property
    def name(self) -> str:
        return f"unimat_{self.variant}"

    @property
    def version(self) -> str:
        return CODE_VERSION


def _set_stats(model: CrystalNet, arr: CrystalArrays, tr: np.ndarray) -> None:
    def ms(x):
        x = x[np.isfinite(x).all(axis=1)] if x.ndim == 2 else x[np.isfinite(x)]
        if len(x) == 0:
            return np.zeros(1), np.ones(1)
        return x.mean(0), np.maximum(x.std(0), 1e-6)

    for name, x in (("lengths", arr.lengths[tr]), ("angles", arr.angles[tr]), ("energy", arr.energy[tr])):
        m, s = ms(x)
        getattr(model, f"{name}_mean").copy_(torch.as_tensor(np.atleast_1d(m), dtype=torch.float32))
        getattr(model, f"{name}_std").copy_(torch.as_tensor(np.atleast_1d(s), dtype=torch.float32))
    if model.comp is not None:
        c = arr.comp[tr]
        model.comp.mean.copy_(torch.as_tensor(c.mean(0)))
        model.comp.std.copy_(torch.as_tensor(np.maximum(c.std(0), 1e-6)))


def _task_loss(model: CrystalNet, out: dict, b: dict, p: TrainParams) -> torch.Tensor:
    loss = p.w_lengths * F.l1_loss(out["lengths"], (b["lengths"] - model.lengths_mean) / model.lengths_std)
    loss = loss + p.w_angles * F.l1_loss(out["angles"], (b["angles"] - model.angles_mean) / model.angles_std)
    mask = torch.isfinite(b["energy"])
    if p.w_energy > 0 and bool(mask.any()):
        et = (b["energy"][mask] - model.energy_mean) / model.energy_std
        loss = loss + p.w_energy * F.l1_loss(out["energy"].squeeze(1)[mask], et)
    return loss + p.w_crystal_system * F.cross_entropy(out["crystal_system"], b["crystal_system"])


def strain_warp(x: torch.Tensor, scale: torch.Tensor, two_theta: torch.Tensor) -> torch.Tensor:
    """Pattern of the same crystal with every length multiplied by `scale` (B,), by warping the grid.

    Bragg: d -> s d  =>  sin(theta') = sin(theta) / s. The value at grid angle theta' is read from
    the original pattern at theta = arcsin(s sin theta') (linear interpolation; 0 where s sin > 1 or
    off the grid). Intensity factors (Lorentz-polarisation, form factors) are not re-weighted: for
    |s - 1| of a few % the change is a few % of the intensities, while every peak moves exactly.
    """
    step = float(two_theta[1] - two_theta[0])
    lo = float(two_theta[0])
    half = torch.deg2rad(two_theta / 2.0)
    src_sin = scale[:, None] * torch.sin(half)[None, :]
    valid = src_sin <= 1.0
    src = torch.rad2deg(2.0 * torch.asin(src_sin.clamp(max=1.0)))
    pos = (src - lo) / step
    i0 = pos.floor().long()
    w = (pos - i0).to(x.dtype)
    n = x.shape[1]
    inside = valid & (i0 >= 0) & (i0 < n - 1)
    i0c = i0.clamp(0, n - 2)
    out = x.gather(1, i0c) * (1 - w) + x.gather(1, i0c + 1) * w
    return torch.where(inside, out, torch.zeros_like(out))


def _batch(arr_t: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[idx] for k, v in arr_t.items()}


def train_model(arr: CrystalArrays, variant: str, params: TrainParams | dict | None = None, *,
                device: str = "cpu", progress: Progress | None = None) -> TrainedModel:
    """Train one variant ("xrd", "composition" or "fused") on the train split; select on val."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    p = TrainParams(**params) if isinstance(params, dict) else (params or TrainParams())
    tr, va = arr.subset("train"), arr.subset("val")
    if len(tr) < 2:
        raise ValueError(f"need at least 2 rows with split='train' to train, found {len(tr)}; load the structures "
                         "with resplit=True to assign a 60/20/20 split (e.g. perov_5 has no train.csv)")
    if not arr.energy_available:
        p = dataclasses.replace(p, w_energy=0.0)
    dev = torch.device(device)
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if p.num_threads:
            torch.set_num_threads(p.num_threads)
        torch.manual_seed(p.seed)
        model = CrystalNet(variant, n_points=arr.xrd.shape[1], n_features=arr.comp.shape[1], emb_dim=p.emb_dim,
                           hidden=p.hidden, dropout=p.dropout, xrd_channels=p.xrd_channels,
                           xrd_transform=p.xrd_transform)
        _set_stats(model, arr, tr)
        model.to(dev)
        data = {"xrd": torch.as_tensor(arr.xrd), "comp": torch.as_tensor(arr.comp),
                "lengths": torch.as_tensor(arr.lengths), "angles": torch.as_tensor(arr.angles),
                "energy": torch.as_tensor(arr.energy), "crystal_system": torch.as_tensor(arr.crystal_system)}
        data = {k: v.to(dev) for k, v in data.items()}
        use_x, use_c = variant != "composition", variant != "xrd"
        if p.strain_augment > 0 and use_x and arr.two_theta is None:
            raise ValueError("strain_augment needs the XRD grid (CrystalArrays.two_theta)")
        grid_t = torch.as_tensor(arr.two_theta, dtype=torch.float32).to(dev) if arr.two_theta is not None else None
        gen = torch.Generator().manual_seed(p.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        align = p.align_epochs if variant == "fused" else 0
        total = align + p.epochs
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p.lr, total_steps=max(1, p.epochs * _n_batches(len(tr), p.batch_size)))
        history: list[dict[str, float]] = []
        best = (float("inf"), -1, None)
        tr_t = torch.as_tensor(tr)
        va_t = torch.as_tensor(va)
        for epoch in range(total):
            aligning = epoch < align
            model.train()
            perm = tr_t[torch.randperm(len(tr), generator=gen)]
            sums = {"loss": 0.0, "task": 0.0, "clip": 0.0}
            nb = 0
            for start in range(0, len(perm), p.batch_size):
                idx = perm[start:start + p.batch_size]
                if len(idx) < 2:  # batch norm / contrastive loss need pairs
                    continue
                b = _batch(data, idx.to(dev))
                if p.strain_augment > 0 and use_x and not aligning:
                    sc = 1.0 + p.strain_augment * (2.0 * torch.rand(len(idx), generator=gen) - 1.0)
                    sc = sc.to(dev)
                    b["xrd"] = strain_warp(b["xrd"], sc, grid_t)
                    b["lengths"] = b["lengths"] * sc[:, None]
                out = model(b["xrd"] if use_x else None, b["comp"] if use_c else None)
                clip = clip_loss(out["z_xrd"], out["z_comp"], p.temperature, p.clip_variant) if variant == "fused" else None
                if aligning:
                    loss, task = clip, torch.zeros(())
                else:
                    task = _task_loss(model, out, b, p)
                    loss = task + (p.clip_weight * clip if clip is not None else 0.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if not aligning:
                    sched.step()
                sums["loss"] += float(loss.detach())
                sums["task"] += float(task.detach())
                sums["clip"] += float(clip.detach()) if clip is not None else 0.0
                nb += 1
            rec = {"epoch": epoch, "phase": 0.0 if aligning else 1.0, **{k: v / max(nb, 1) for k, v in sums.items()}}
            if not aligning and len(va):
                rec["val_task"] = evaluate_loss(model, data, va_t.to(dev), variant, p)
            history.append(rec)
            if not aligning:
                score = rec.get("val_task", rec["task"])
                if score < best[0] or (len(va) == 0):
                    best = (score, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
            if progress is not None:
                progress(f"train_{variant}", epoch + 1, total)
        model.load_state_dict(best[2])
        model.to("cpu").eval()
        weights = weights_to_bytes(model)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
    return TrainedModel(variant=variant, model=model, weights=weights, sha256=weights_sha256(weights),
                        params=p.as_dict(), history=history, best_epoch=best[1],
                        seconds=time.perf_counter() - t0, n_train=len(tr), device=str(dev))


def _n_batches(n: int, bs: int) -> int:
    full, rem = divmod(n, bs)
    return full + (1 if rem >= 2 else 0)


@torch.no_grad()
def evaluate_loss(model: CrystalNet, data: dict, idx: torch.Tensor, variant: str, p: TrainParams) -> float:
    model.eval()
    b = _batch(data, idx)
    out = model(b["xrd"] if variant != "composition" else None, b["comp"] if variant != "xrd" else None)
    return float(_task_loss(model, out, b, p))


@torch.no_grad()
def predict(model: CrystalNet, arr: CrystalArrays, idx: np.ndarray, device: str = "cpu",
            batch_size: int = 512, num_threads: int | None = 1) -> dict[str, np.ndarray]:
    """Physical-unit predictions and joint embeddings for rows `idx` of `arr`."""
    prev = torch.get_num_threads()
    try:
        if num_threads:
            torch.set_num_threads(num_threads)
        model = model.to(device).eval()
        outs: dict[str, list] = {}
        for s in range(0, len(idx), batch_size):
            j = idx[s:s + batch_size]
            xr = torch.as_tensor(arr.xrd[j]).to(device) if model.xrd is not None else None
            co = torch.as_tensor(arr.comp[j]).to(device) if model.comp is not None else None
            for k, v in model.predict(xr, co).items():
                outs.setdefault(k, []).append(v.cpu().numpy())
        model.to("cpu")
    finally:
        torch.set_num_threads(prev)
    return {k: np.concatenate(v) for k, v in outs.items()}
