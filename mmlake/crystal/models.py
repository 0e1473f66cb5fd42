"""UniMat-style encoders, fusion block, task heads and the contrastive (CLIP) loss.

- `XRDEncoder`: 1D CNN over the smeared pattern. Absolute peak positions carry the lattice (Bragg's
  law), so the conv stack ends in a flatten + linear layer, not a translation-invariant global pool.
- `CompositionEncoder`: MLP over the standardised Magpie-style features (mean/std are buffers, so
  the weights are self-contained).
- `CrystalNet`: one or both encoders -> (concatenation) -> fusion block of three linear layers
  (UniMat section 2.5) -> joint embedding -> heads for lattice lengths (3, Å), lattice angles (3, deg),
  formation energy (1, eV/atom) and crystal system (7 logits). Regression heads predict
  standardised targets; `predict` returns physical units (target mean/std are buffers).
  Single-modality variants use the same fusion block over their one embedding, so the only
  difference between variants is the input modality (and the alignment loss).
- `clip_loss`: Eq. 1 of the preprint (see its docstring for the two readings).
"""

from __future__ import annotations

import hashlib
import io
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = ("xrd", "composition", "fused")
N_CLASSES = 7


def clip_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, variant: str = "eq1") -> torch.Tensor:
    """Symmetric contrastive loss between paired embeddings z1[i] <-> z2[i] (cosine similarity / tau).

    variant="eq1": the preprint's Eq. 1 as printed:
        L = -1/N sum_i log( e^{s_ii/tau} / sum_j e^{s_ij/tau} 1{i != j} )
            -1/N sum_i log( e^{s'_ii/tau} / sum_j e^{s'_ij/tau} 1{i != j} ),   s' = s^T,
      i.e. the denominators hold the negatives only (the "decoupled" contrastive loss; it can be
      negative) and the two directions are summed. Needs N >= 2.
    variant="clip": Radford et al.'s CLIP: cross-entropy over all j (positive included) in each
      direction, the two directions averaged. Always >= 0.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1, z2 must both be (N, D) with equal shapes, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = z1.shape[0]
    s = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T / temperature
    if variant == "clip":
        target = torch.arange(n, device=z1.device)
        return 0.5 * (F.cross_entropy(s, target) + F.cross_entropy(s.T, target))
    if variant != "eq1":
        raise ValueError(f"variant must be 'eq1' or 'clip', got {variant!r}")
    if n < 2:
        raise ValueError("the Eq. 1 contrastive loss needs a batch of at least 2 (its denominators hold the negatives)")
    eye = torch.eye(n, dtype=torch.bool, device=z1.device)
    pos = s.diagonal()
    neg = s.masked_fill(eye, float("-inf"))
    return -(pos - torch.logsumexp(neg, dim=1)).mean() - (pos - torch.logsumexp(neg.T, dim=1)).mean()


class XRDEncoder(nn.Module):
    """Conv blocks (conv -> batch norm -> ReLU -> max-pool 2); the first conv has stride 2 (the 0.1-deg
    grid oversamples sigma = 0.3 deg peaks), kernels shrink 9, 7, 5, 5, 3 as the signal is pooled."""

    def __init__(self, n_points: int, emb_dim: int = 128, channels: tuple[int, ...] = (16, 16, 32, 32, 64),
                 kernels: tuple[int, ...] = (9, 7, 5, 5, 3), dropout: float = 0.1, transform: str = "sqrt"):
        super().__init__()
        if transform not in ("none", "sqrt", "log"):
            raise ValueError(f"xrd_transform must be 'none', 'sqrt' or 'log', got {transform!r}")
        self.transform = transform
        if len(kernels) < len(channels):
            kernels = tuple(kernels) + (3,) * (len(channels) - len(kernels))
        layers: list[nn.Module] = []
        c_in, length = 1, n_points
        for i, (c, k) in enumerate(zip(channels, kernels)):
            stride = 2 if i == 0 else 1
            layers += [nn.Conv1d(c_in, c, k, stride=stride, padding=k // 2), nn.BatchNorm1d(c), nn.ReLU(),
                       nn.MaxPool1d(2)]
            length = ((length + 2 * (k // 2) - k) // stride + 1) // 2
            c_in = c
        if length < 1:
            raise ValueError(f"n_points={n_points} is too short for {len(channels)} conv blocks")
        self.conv = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in * length, 256), nn.ReLU(),
                                  nn.Linear(256, emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, n_points), max-normalised pattern
        x = x.clamp(min=0.0)
        if self.transform == "sqrt":  # weak (often low-angle, lattice-defining) peaks stay visible
            x = x.sqrt()
        elif self.transform == "log":
            x = torch.log1p(100.0 * x) / math.log(101.0)
        return self.head(self.conv(x.unsqueeze(1)))


class CompositionEncoder(nn.Module):
    def __init__(self, n_features: int, emb_dim: int = 128, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _head(d_in: int, d_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, 64), nn.ReLU(), nn.Linear(64, d_out))


class CrystalNet(nn.Module):
    """Encoders (per variant) + fusion block (3 linear layers) + four heads."""

    def __init__(self, variant: str, n_points: int = 901, n_features: int = 126, emb_dim: int = 128,
                 hidden: int = 256, dropout: float = 0.1, xrd_channels: tuple[int, ...] = (16, 16, 32, 32, 64),
                 xrd_transform: str = "sqrt"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.config: dict[str, Any] = dict(variant=variant, n_points=n_points, n_features=n_features, emb_dim=emb_dim,
                                           hidden=hidden, dropout=dropout, xrd_channels=list(xrd_channels),
                                           xrd_transform=xrd_transform)
        self.variant = variant
        self.xrd = XRDEncoder(n_points, emb_dim, tuple(xrd_channels), dropout=dropout,
                                                     transform=xrd_transform) if variant != "composition" else None
        self.comp = CompositionEncoder(n_features, emb_dim, hidden, dropout) if variant != "xrd" else None
        d_in = emb_dim * (2 if variant == "fused" else 1)
        self.fusion = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout),
                                    nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, emb_dim))
        self.heads = nn.ModuleDict({"lengths": _head(emb_dim, 3), "angles": _head(emb_dim, 3),
                                    "energy": _head(emb_dim, 1), "crystal_system": _head(emb_dim, N_CLASSES)})
        for name, k in (("lengths", 3), ("angles", 3), ("energy", 1)):
            self.register_buffer(f"{name}_mean", torch.zeros(k))
            self.register_buffer(f"{name}_std", torch.ones(k))

    def forward(self, xrd: torch.Tensor | None, comp: torch.Tensor | None) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        parts = []
        if self.xrd is not None:
            out["z_xrd"] = self.xrd(xrd)
            parts.append(out["z_xrd"])
        if self.comp is not None:
            out["z_comp"] = self.comp(comp)
            parts.append(out["z_comp"])
        h = self.fusion(torch.cat(parts, dim=1))
        out["embedding"] = h
        r = F.relu(h)
        for name, head in self.heads.items():
            out[name] = head(r)
        return out

    @torch.no_grad()
    def predict(self, xrd: torch.Tensor | None, comp: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Eval-mode predictions in physical units + the joint embedding."""
        self.eval()
        o = self.forward(xrd, comp)
        return {
            "lengths": o["lengths"] * self.lengths_std + self.lengths_mean,
            "angles": o["angles"] * self.angles_std + self.angles_mean,
            "energy": (o["energy"] * self.energy_std + self.energy_mean).squeeze(1),
            "crystal_system": o["crystal_system"].argmax(1),
            "embedding": o["embedding"],
        }


def weights_to_bytes(model: CrystalNet) -> bytes:
    """torch.save({'config', 'state_dict'}) into bytes: self-describing, loadable with weights_only."""
    buf = io.BytesIO()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({"config": model.config, "state_dict": state}, buf)
    return buf.getvalue()


def weights_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_from_bytes(data: bytes, device: str = "cpu") -> CrystalNet:
    obj = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    cfg = dict(obj["config"])
    cfg["xrd_channels"] = tuple(cfg["xrd_channels"])
    model = CrystalNet(**cfg)
    model.load_state_dict(obj["state_dict"])
    return model.to(device).eval()
