"""A self-supervised HAADF chip encoder trained on a campaign's own chips (plain torch).

Why: ImageNet encoders were never shown atomic-resolution images; a small CNN trained on the
campaign's chips with augmentations that mimic what changes between acquisitions, but not what a
region *is*, learns features for exactly these images (the slides' "lack of suitable encoders").

Training (:func:`train_ssl`) -- SimCLR-style, two augmented views of every chip's context window:

- **input**: per session, the HAADF image normalised by its own median and robust spread (so the
  Z-contrast between regions stays: a window is *not* rescaled on its own); each chip is seen through
  a ``max(context_px, chip_px)`` window centred on it, resized to ``input_px``;
- **physics augmentations** (each view independently): probe blur (Gaussian, sigma uniform in
  ``[0, blur_sigma_max]`` px), scan-line jitter (each scan line shifted by ``N(0, s^2)`` px, s uniform
  in ``[0, jitter_px_max]``, sub-pixel, linear interpolation), Poisson noise at the session's counts
  (the image is converted to counts with a gain estimated from its pixel-to-pixel noise, thinned to a
  dose fraction log-uniform in ``[dose_min, 1]`` and re-sampled), translation of the window by up to
  ``shift_periods`` lattice periods (the period measured once per session by the FFT lattice finder;
  ``chip_px / 2`` where no lattice is found), and one of the 8 symmetries of the square;
- **losses**: NT-Xent between the two views' projections (temperature ``temperature``) plus, when a
  session has EDS, ``cross_modal_weight`` times a CLIP-style symmetric InfoNCE that pairs each chip's
  HAADF embedding with its own EDS spectrum (binned to ``eds_bins`` energy bins between
  ``eds_kev_range``, normalised to unit total, square-rooted) through a small spectrum MLP;
- Adam, cosine learning-rate decay over ``steps`` steps of ``batch_size`` chips drawn uniformly
  from all chips of all sessions; everything seeded (``seed``): same data, parameters, torch
  version and thread count -> same state dict.

:func:`train_ssl` returns :class:`SSLTraining` (state dict, loss curve, the resolved parameters, per
session facts). :class:`SSLEncoder` loads a state dict (+ its parameters) and embeds chips: the
backbone's pooled output, ``embed_dim`` values per chip.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmlake.encoders.base import ChipEncoder, check_batch_size, check_chips
from mmlake.encoders.device import resolve_device

TRAIN_VERSION = "1"

DEFAULT_PARAMS: dict[str, Any] = {
    "context_px": 48,
    "input_px": 32,
    "widths": [16, 32, 64],
    "embed_dim": 64,
    "proj_dim": 64,
    "steps": 150,
    "batch_size": 128,
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "temperature": 0.2,
    "cross_modal_weight": 0.5,
    "eds_bins": 128,
    "eds_kev_range": [0.2, 16.0],
    "blur_sigma_max": 1.2,
    "jitter_px_max": 0.6,
    "dose_min": 0.2,
    "shift_periods": 1.0,
    "seed": 0,
}


@dataclass
class SSLSession:
    """One session's training input."""

    session_id: str
    image: np.ndarray              # (H, W) HAADF covering the chip grid (origin (0, 0))
    chip_px: int
    eds: np.ndarray | None = None  # (n_chips, n_channels) chip sums, chip_index order
    energy_offset_kev: float = 0.0
    energy_scale_kev: float = 0.01
    data_version: str | None = None  # the chips' data version (provenance only)


@dataclass
class SSLTraining:
    state_dict: dict
    loss_curve: list[dict[str, float]]
    params: dict[str, Any]
    sessions: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def checkpoint_bytes(self) -> bytes:
        """``torch.save({"state_dict", "params"})`` bytes (no pickled Python objects beyond plain types)."""
        return checkpoint_bytes(self.state_dict, self.params)


def checkpoint_bytes(state_dict: dict, params: Mapping[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"state_dict": state_dict, "params": dict(params)}, buf)
    return buf.getvalue()


def load_checkpoint(data: bytes | str) -> tuple[dict, dict]:
    """(state_dict, params) from checkpoint bytes or a file path (``weights_only`` load)."""
    import torch

    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    ck = torch.load(src, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or "state_dict" not in ck or "params" not in ck:
        raise ValueError("not an mmlake ssl checkpoint: expected a dict with 'state_dict' and 'params'")
    return ck["state_dict"], ck["params"]


def resolve_params(**overrides) -> dict[str, Any]:
    unknown = set(overrides) - set(DEFAULT_PARAMS)
    if unknown:
        raise ValueError(f"unknown ssl parameter(s) {sorted(unknown)}; known: {sorted(DEFAULT_PARAMS)}")
    p = {**DEFAULT_PARAMS, **{k: v for k, v in overrides.items() if v is not None}}
    for k in ("context_px", "input_px", "embed_dim", "proj_dim", "steps", "batch_size", "eds_bins"):
        v = p[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{k} must be a positive integer, got {v!r}")
        p[k] = int(v)
    if p["input_px"] < 8:
        raise ValueError(f"input_px must be >= 8, got {p['input_px']}")
    p["widths"] = [int(w) for w in p["widths"]]
    if len(p["widths"]) < 1 or min(p["widths"]) < 1:
        raise ValueError(f"widths must be a non-empty list of positive ints, got {p['widths']!r}")
    for k in ("lr", "temperature"):
        if not float(p[k]) > 0:
            raise ValueError(f"{k} must be > 0, got {p[k]!r}")
    for k in ("weight_decay", "cross_modal_weight", "blur_sigma_max", "jitter_px_max", "shift_periods"):
        if not float(p[k]) >= 0:
            raise ValueError(f"{k} must be >= 0, got {p[k]!r}")
    if not 0 < float(p["dose_min"]) <= 1:
        raise ValueError(f"dose_min must be in (0, 1], got {p['dose_min']!r}")
    p["seed"] = int(p["seed"])
    p["eds_kev_range"] = [float(x) for x in p["eds_kev_range"]]
    return p


# ------------------------------------------------------------------------------------------------
# model
def build_net(params: Mapping[str, Any]):
    """The backbone (``backbone``), the view projector (``proj``) and the spectrum head (``eds``)."""
    import torch
    from torch import nn

    def block(ci, co):
        return [nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True),
                nn.Conv2d(co, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True)]

    layers, ci = [], 1
    for i, w in enumerate(params["widths"]):
        layers += block(ci, w)
        if i < len(params["widths"]) - 1:
            layers.append(nn.MaxPool2d(2))
        ci = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ci, params["embed_dim"])]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(*layers)
            d, p = params["embed_dim"], params["proj_dim"]
            self.proj = nn.Sequential(nn.Linear(d, 2 * d), nn.BatchNorm1d(2 * d), nn.ReLU(inplace=True),
                                      nn.Linear(2 * d, p))
            self.proj_x = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(inplace=True), nn.Linear(2 * d, p))
            self.eds = nn.Sequential(nn.Linear(params["eds_bins"], 128), nn.ReLU(inplace=True), nn.Linear(128, p))

    del torch
    return Net()


# ------------------------------------------------------------------------------------------------
# per-session preparation (shared by training and encoding)
def normalise_image(image: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """(image - median) / robust spread (IQR / 1.349, else std, else 1)."""
    img = np.asarray(image, dtype=np.float64)
    med = float(np.median(img))
    q1, q3 = np.percentile(img, [25, 75])
    spread = float((q3 - q1) / 1.349) or float(img.std()) or 1.0
    return ((img - med) / spread).astype(np.float32), {"median": med, "spread": spread}


def estimate_gain(image: np.ndarray) -> float:
    """Counts per image unit, from the pixel-to-pixel noise (Poisson: variance = mean in counts).

    The noise variance is estimated from differences of horizontally adjacent pixels (half their
    variance, robustly via the MAD), which the smooth signal contributes little to. Clipped to
    [1e-3, 1e6]; returns 1.0 for an image without noise or with a non-positive mean.
    """
    img = np.asarray(image, dtype=np.float64)
    mean = float(img.mean())
    d = np.diff(img, axis=1).ravel()
    var = (1.4826 * np.median(np.abs(d - np.median(d)))) ** 2 / 2.0
    if not (var > 0 and mean > 0):
        return 1.0
    return float(np.clip(mean / var, 1e-3, 1e6))


def lattice_period_px(image: np.ndarray, fallback: float) -> tuple[float, bool]:
    """Lattice period in px of the whole image (FFT lattice finder), else ``fallback``."""
    from mmlake.lattice import find_lattice_peak

    try:
        peak = find_lattice_peak(np.asarray(image, dtype=np.float64), 1.0, max_period_nm=1e6)
    except ValueError:
        return float(fallback), False
    if peak.is_crystalline and np.isfinite(peak.period_px) and peak.period_px > 1:
        return float(peak.period_px), True
    return float(fallback), False


def bin_spectra(sums: np.ndarray, offset_kev: float, scale_kev: float, n_bins: int,
                kev_range: Sequence[float]) -> np.ndarray:
    """(n, C) chip sums -> (n, n_bins) sqrt of the unit-total spectrum in fixed energy bins."""
    sums = np.asarray(sums, dtype=np.float64)
    e = offset_kev + scale_kev * np.arange(sums.shape[1])
    edges = np.linspace(kev_range[0], kev_range[1], n_bins + 1)
    idx = np.digitize(e, edges) - 1
    ok = (idx >= 0) & (idx < n_bins)
    out = np.zeros((sums.shape[0], n_bins))
    np.add.at(out.T, idx[ok], sums[:, ok].T)
    tot = out.sum(axis=1, keepdims=True)
    out = np.where(tot > 0, out / np.where(tot > 0, tot, 1.0), 0.0)
    return np.sqrt(out).astype(np.float32)


@dataclass
class _Prepared:
    sid: str
    raw: np.ndarray         # padded raw image (float32)
    norm: dict[str, float]
    gain: float
    period: float
    window: int
    pad: int
    top: np.ndarray         # window top-left (in padded coords) per chip, before the random shift
    left: np.ndarray
    eds: np.ndarray | None  # (n, eds_bins)
    max_shift: int


def _prepare(s: SSLSession, p: Mapping[str, Any]) -> _Prepared:
    from mmlake.chips import ChipGrid

    img = np.asarray(s.image, dtype=np.float64)
    cp = int(s.chip_px)
    grid = ChipGrid(cp, img.shape[0] // cp, img.shape[1] // cp)
    img = grid.crop(img)
    _, norm = normalise_image(img)
    period, _ = lattice_period_px(img, cp / 2.0)
    w = max(int(p["context_px"]), cp)
    max_shift = int(math.ceil(float(p["shift_periods"]) * period))
    pad = w + max_shift + 2
    mode = "reflect" if min(img.shape) > pad else "wrap"
    raw = np.pad(img, pad, mode=mode).astype(np.float32)
    rows, cols = grid.rows_cols()
    top = rows * cp + (cp - w) // 2 + pad
    left = cols * cp + (cp - w) // 2 + pad
    eds = None
    if s.eds is not None:
        if len(s.eds) != grid.n_chips:
            raise ValueError(f"session {s.session_id}: eds has {len(s.eds)} chips, the HAADF grid {grid.n_chips}")
        eds = bin_spectra(s.eds, s.energy_offset_kev, s.energy_scale_kev, p["eds_bins"], p["eds_kev_range"])
    return _Prepared(s.session_id, raw, norm, estimate_gain(img), period, w, pad, top, left, eds, max_shift)


# ------------------------------------------------------------------------------------------------
# augmentation (torch, on a batch of raw windows of one session)
def _gaussian_blur(x, sigma, gen):
    """Per-sample Gaussian blur of (b, h, w) with sigmas (b,) (0 = none)."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]
    r = max(1, int(math.ceil(3 * float(sigma.max())))) if float(sigma.max()) > 0 else 0
    if r == 0:
        return x
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    s = sigma.clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None, :] / s) ** 2)
    k = torch.where(sigma[:, None] > 1e-3, k, (t[None, :] == 0).to(x.dtype))
    k = k / k.sum(dim=1, keepdim=True)
    y = F.pad(x[None], (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=b)
    y = F.conv2d(y, k[:, None, :, None], groups=b)
    return y[0]


def _scan_jitter(x, amp, gen):
    """Shift every scan line (row) of each sample by N(0, amp^2) px, linear interpolation, edges clamped."""
    import torch

    b, h, w = x.shape
    shift = torch.randn(b, h, 1, generator=gen) * amp[:, None, None]
    xs = torch.arange(w, dtype=x.dtype)[None, None, :] - shift
    x0 = xs.floor().clamp(0, w - 1)
    x1 = (x0 + 1).clamp(0, w - 1)
    f = (xs - xs.floor()).clamp(0, 1)
    xs0 = x0.long().expand(b, h, w)
    xs1 = x1.long().expand(b, h, w)
    return torch.gather(x, 2, xs0) * (1 - f) + torch.gather(x, 2, xs1) * f


def _d4(x, code):
    """Apply symmetry ``code`` (0..7: k = code // 2 quarter turns, flipped if odd) per sample of (b, h, w)."""
    import torch

    out = torch.empty_like(x)
    for c in range(8):
        m = code == c
        if m.any():
            y = torch.rot90(x[m], c // 2, dims=(1, 2))
            out[m] = torch.flip(y, dims=(2,)) if c % 2 else y
    return out


def _views(prep: _Prepared, idx: np.ndarray, p: Mapping[str, Any], rng: np.random.Generator, gen):
    """One augmented view (b, 1, input_px, input_px) of chips ``idx`` of one session."""
    import torch
    import torch.nn.functional as F

    b, w, ms = len(idx), prep.window, prep.max_shift
    big = w + 2 * ms
    ar = np.arange(big)
    t0 = prep.top[idx] - ms
    l0 = prep.left[idx] - ms
    crops = prep.raw[(t0[:, None] + ar)[:, :, None], (l0[:, None] + ar)[:, None, :]]
    x = torch.from_numpy(np.ascontiguousarray(crops))
    x = _gaussian_blur(x, torch.rand(b, generator=gen) * float(p["blur_sigma_max"]), gen)
    x = _scan_jitter(x, torch.rand(b, generator=gen) * float(p["jitter_px_max"]), gen)
    # Poisson noise at the session's counts, thinned to a random dose fraction
    dmin = float(p["dose_min"])
    dose = torch.exp(torch.rand(b, 1, 1, generator=gen) * math.log(dmin)) if dmin < 1 else torch.ones(b, 1, 1)
    rate = (x.clamp_min(0) * prep.gain * dose).clamp_max(1e7)
    x = torch.poisson(rate, generator=gen) / (prep.gain * dose)
    # translation within a unit cell
    dy = rng.integers(-ms, ms + 1, b) + ms
    dx = rng.integers(-ms, ms + 1, b) + ms
    aw = np.arange(w)
    iy = torch.from_numpy((dy[:, None] + aw)[:, :, None].repeat(w, axis=2))
    ix = torch.from_numpy((dx[:, None] + aw)[:, None, :].repeat(w, axis=1))
    bi = torch.arange(b)[:, None, None].expand(b, w, w)
    x = x[bi, iy, ix]
    x = (x - prep.norm["median"]) / prep.norm["spread"]
    x = _d4(x, torch.from_numpy(rng.integers(0, 8, b)))
    x = x[:, None].float()
    if w != p["input_px"]:
        x = F.interpolate(x, size=(p["input_px"], p["input_px"]), mode="bilinear", align_corners=False,
                          antialias=w > p["input_px"])
    return x


def _nt_xent(z1, z2, tau):
    import torch
    import torch.nn.functional as F

    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / tau
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def _clip(za, zb, tau):
    import torch
    import torch.nn.functional as F

    za, zb = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    logits = za @ zb.T / tau
    t = torch.arange(len(za))
    return 0.5 * (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t))


def train_ssl(sessions: Sequence[SSLSession], device: str = "cpu",
              progress: Callable[[int, float], None] | None = None, **params) -> SSLTraining:
    """Train the encoder on ``sessions`` (see the module docstring); returns state dict, loss curve, params."""
    import torch

    p = resolve_params(**params)
    if not sessions:
        raise ValueError("sessions: need at least one session with a HAADF image to train on")
    dev = resolve_device(device)
    t_start = time.perf_counter()
    preps = [_prepare(s, p) for s in sessions]
    sizes = np.array([len(pr.top) for pr in preps])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n_total = int(sizes.sum())
    rng = np.random.default_rng(p["seed"])
    gen = torch.Generator().manual_seed(p["seed"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p["seed"])
        net = build_net(p)
    net.to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, p["steps"]) / p["steps"])))
    xw = float(p["cross_modal_weight"])
    has_eds = any(pr.eds is not None for pr in preps)
    curve: list[dict[str, float]] = []
    bs = min(p["batch_size"], n_total)
    for step in range(p["steps"]):
        flat = np.sort(rng.choice(n_total, bs, replace=n_total < bs))
        which = np.searchsorted(offsets, flat, side="right") - 1
        v1, v2, spec, spec_mask = [], [], [], []
        for si in np.unique(which):
            idx = flat[which == si] - offsets[si]
            pr = preps[si]
            v1.append(_views(pr, idx, p, rng, gen))
            v2.append(_views(pr, idx, p, rng, gen))
            if pr.eds is not None:
                spec.append(torch.from_numpy(pr.eds[idx]))
                spec_mask.append(torch.ones(len(idx), dtype=torch.bool))
            else:
                spec.append(torch.zeros(len(idx), p["eds_bins"]))
                spec_mask.append(torch.zeros(len(idx), dtype=torch.bool))
        x1, x2 = torch.cat(v1).to(dev), torch.cat(v2).to(dev)
        h1, h2 = net.backbone(x1), net.backbone(x2)
        loss_v = _nt_xent(net.proj(h1), net.proj(h2), float(p["temperature"]))
        loss = loss_v
        loss_x = torch.zeros((), device=dev)
        if has_eds and xw > 0:
            m = torch.cat(spec_mask).to(dev)
            if int(m.sum()) >= 2:
                s_emb = net.eds(torch.cat(spec).to(dev)[m])
                loss_x = _clip(net.proj_x(0.5 * (h1 + h2)[m]), s_emb, float(p["temperature"]))
                loss = loss + xw * loss_x
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        rec = {"step": step, "loss": float(loss.detach()), "view_nce": float(loss_v.detach()),
               "cross_modal_nce": float(loss_x.detach())}
        curve.append(rec)
        if progress:
            progress(step, rec["loss"])
    net.eval().to("cpu")
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    facts = [{"session_id": s.session_id, "n_chips": int(len(pr.top)), "window_px": pr.window,
              "lattice_period_px": round(pr.period, 4), "counts_gain": pr.gain, "has_eds": pr.eds is not None,
              "data_version": s.data_version} for s, pr in zip(sessions, preps)]
    out_params = {**p, "train_version": TRAIN_VERSION, "device": dev, "n_chips": n_total,
                  "torch_threads": torch.get_num_threads()}
    return SSLTraining(sd, curve, out_params, facts, time.perf_counter() - t_start)


# ------------------------------------------------------------------------------------------------
class SSLEncoder(ChipEncoder):
    """Embeds chips with a trained state dict: ``SSLEncoder(state_dict=..., params=...)`` or
    ``SSLEncoder(weights="/path/ckpt.pt")`` / ``SSLEncoder(checkpoint=bytes)`` (from
    :func:`checkpoint_bytes`). ``weights_id`` is the sha256 of the state dict."""

    name = "ssl"
    version = "1"

    def __init__(self, state_dict: dict | None = None, params: Mapping[str, Any] | None = None,
                 weights: str | None = None, checkpoint: bytes | None = None):
        import torch

        from mmlake.encoders.vgg16 import state_dict_sha256

        given = sum(x is not None for x in (state_dict, weights, checkpoint))
        if given != 1:
            raise ValueError("give exactly one of state_dict (with params), weights (a checkpoint path) or "
                             "checkpoint (bytes): the ssl encoder has no default weights, it is trained per "
                             "campaign (mmlake.encoders.ssl.train_ssl)")
        if state_dict is None:
            state_dict, params = load_checkpoint(checkpoint if checkpoint is not None else str(weights))
        if params is None:
            raise ValueError("params: the training parameters (SSLTraining.params) are needed with a state_dict")
        known = {k: params[k] for k in DEFAULT_PARAMS if k in params}
        self.params = resolve_params(**known)
        net = build_net(self.params)
        try:
            net.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"state_dict does not match the ssl network for these params: {str(exc)[:300]}") from exc
        net.eval()
        for q in net.parameters():
            q.requires_grad_(False)
        self._backbone = net.backbone
        self.weights_id = state_dict_sha256(net.state_dict())
        self.dim = int(self.params["embed_dim"])
        self._on_device: dict[str, Any] = {}
        del torch

    @property
    def config(self) -> dict[str, Any]:
        return {k: self.params[k] for k in ("context_px", "input_px", "widths", "embed_dim", "seed", "steps")}

    def _model_on(self, device):
        import copy

        if device not in self._on_device:
            self._on_device[device] = self._backbone if device == "cpu" else copy.deepcopy(self._backbone).to(device)
        return self._on_device[device]

    def encode(self, chips, batch_size=256, device="cpu", *, image=None) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        from mmlake.chips import ChipGrid, centred_windows

        chips = check_chips(chips)
        batch_size = check_batch_size(batch_size)
        dev = resolve_device(device)
        n, cp, _ = chips.shape
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        if image is not None:
            from mmlake.encoders.effnet import context_windows

            context_windows(chips, image, self.params["context_px"])  # validates the grid against the image
            img = np.asarray(image)
            grid = ChipGrid(cp, img.shape[0] // cp, img.shape[1] // cp)
            _, norm = normalise_image(grid.crop(img))
            _, get = centred_windows(img, grid, self.params["context_px"])
        else:  # the chips alone: normalised by the statistics of the stack
            _, norm = normalise_image(chips)
            get = lambda sl: chips[sl]  # noqa: E731
        model = self._model_on(dev)
        ip = self.params["input_px"]
        with torch.inference_mode():
            for s in range(0, n, batch_size):
                sl = slice(s, min(n, s + batch_size))
                x = torch.from_numpy(((get(sl) - norm["median"]) / norm["spread"]).astype(np.float32))[:, None].to(dev)
                if x.shape[-1] != ip:
                    x = F.interpolate(x, size=(ip, ip), mode="bilinear", align_corners=False,
                                      antialias=x.shape[-1] > ip)
                out[sl] = model(x).float().cpu().numpy()
        return out
