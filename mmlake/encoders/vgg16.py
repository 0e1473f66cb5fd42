"""VGG16 chip encoder (the preprint's image embedding).

Preprocessing follows the preprint's public code (pnnl/GraphEM, ``data_tools.collect_data``) with
torchvision's conventions instead of Keras': each chip is min-max scaled to [0, 1] (per chip; a
constant chip becomes all zeros), resized to 32x32 (bilinear, no antialiasing, as
``tf.image.resize``), replicated to 3 channels and normalised with the ImageNet mean/std that
torchvision's VGG16 weights were trained with. The embedding is the output of ``features`` (the 13
conv layers and 5 max-pools, i.e. the last conv block after its pool), which is 512x1x1 at 32 px:
512-d. The classifier is never built (it holds 89 % of VGG16's 138 M parameters).

Weights (``weights=``):

- ``"imagenet"``: torchvision's ``VGG16_Weights.IMAGENET1K_V1``, loaded through torchvision's normal
  mechanism from the torch hub cache (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``, default
  ``~/.cache/torch/hub/checkpoints/``). mmlake never downloads: when the file is missing it raises
  ``WeightsUnavailableError`` saying how to provide it.
- ``"/path/to/file.pth"``: a local state dict (full VGG16 ``features.*``/``classifier.*`` keys, or
  the ``features`` part alone), checked key by key and shape by shape.
- ``"random"`` (with ``seed``): explicitly requested random initialisation (torchvision's VGG init:
  Kaiming-normal fan_out conv weights, zero biases). For tests and ablations only.

``channels_last`` (default True): NHWC memory format for the conv stack; on this project's CPU
benchmark (bench/encoders.py, 2 AVX-512 cores, oneDNN) it ran 157 vs 129 GFLOP/s at batch 256 and
90 vs 76 at batch 32, with results equal to 4e-7. It is recorded in ``config``.

``weights_id`` is ``"sha256:<hex>"`` over the features state dict (keys sorted; for each key its
name, dtype, shape and little-endian float32 bytes), or ``"random:<seed>"``.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from mmlake.encoders.base import ChipEncoder, check_batch_size, check_chips
from mmlake.encoders.device import resolve_device, resolve_precision
from mmlake.errors import MmlakeError

INPUT_PX = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's VGG16 "D" configuration; conv layers sit at these indices of `features`.
_CFG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class WeightsUnavailableError(MmlakeError):
    """Pretrained weights were asked for but are not on this machine."""


_IMAGENET_FILE = "vgg16-397923af.pth"  # basename of torchvision's VGG16_Weights.IMAGENET1K_V1.url


def imagenet_weights_path() -> Path:
    """Where torchvision's loader looks for the ImageNet VGG16 checkpoint (the torch hub cache).

    Without torch imported, torch.hub's default location is computed as torch does ($TORCH_HOME,
    else $XDG_CACHE_HOME/torch, else ~/.cache/torch; then hub/checkpoints), so asking whether the
    weights are present costs no torch import (3-6 s)."""
    import sys

    if "torch" in sys.modules:  # torch.hub's own answer (it may have been set_dir'd); not torchvision's
        import torch.hub          # import (1.4 s, torch._dynamo), for a file name tests pin to its url

        return Path(torch.hub.get_dir()) / "checkpoints" / _IMAGENET_FILE
    home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")))
    return Path(home) / "hub" / "checkpoints" / _IMAGENET_FILE


def _build_features():
    from torchvision.models.vgg import make_layers

    return make_layers(_CFG_D, batch_norm=False)


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    idx, cin = 0, 3
    for v in _CFG_D:
        if v == "M":
            idx += 1
            continue
        shapes[f"{idx}.weight"] = (v, cin, 3, 3)
        shapes[f"{idx}.bias"] = (v,)
        cin = v
        idx += 2  # conv + ReLU
    return shapes


def _features_state_dict(sd: Any, source: str) -> dict:
    """Extract and validate the ``features`` part of a VGG16 state dict."""
    import torch

    if isinstance(sd, dict) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
        for wrapper in ("state_dict", "model", "model_state_dict"):
            if isinstance(sd.get(wrapper), dict):
                sd = sd[wrapper]
                break
    if not isinstance(sd, dict) or not sd:
        raise ValueError(f"weights={source!r}: file does not hold a state dict (a dict of tensors)")
    keys = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    expected = _expected_shapes()
    if any(k.startswith("features.") for k in keys):
        prefix = "features."
        feats = {k[len(prefix):]: v for k, v in keys.items() if k.startswith(prefix)}
        unexpected = [k for k in keys if not k.startswith(("features.", "classifier."))]
    else:
        prefix = ""
        feats = dict(keys)
        unexpected = []
    unexpected += [prefix + k for k in feats if k not in expected]
    missing = [prefix + k for k in expected if k not in feats]
    bad_shape = [
        f"{prefix}{k}: {tuple(getattr(feats[k], 'shape', ('not a tensor',)))} (expected {expected[k]})"
        for k in expected
        if k in feats and tuple(getattr(feats[k], "shape", ("not a tensor",))) != expected[k]
    ]
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:6]}{' ...' if len(missing) > 6 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}")
        if bad_shape:
            parts.append(f"wrong shapes {bad_shape[:4]}{' ...' if len(bad_shape) > 4 else ''}")
        raise ValueError(
            f"weights={source!r} is not a torchvision VGG16 state dict: " + "; ".join(parts)
            + ". Expected the state_dict() of torchvision.models.vgg16() (keys features.N.weight/"
            "bias, classifier.* optional) or of its `features` module alone."
        )
    not_tensor = [prefix + k for k in expected if not isinstance(feats[k], torch.Tensor)]
    if not_tensor:
        raise ValueError(f"weights={source!r}: entries {not_tensor[:4]} are not tensors")
    return {k: feats[k].detach().to(dtype=torch.float32, device="cpu") for k in expected}


def state_dict_sha256(sd: dict) -> str:
    """Canonical sha256 of a state dict: keys sorted; name, dtype, shape, raw bytes of each."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes())
    return "sha256:" + h.hexdigest()


class VGG16Encoder(ChipEncoder):
    name = "vgg16"
    version = "1"
    dim = 512

    def __init__(
        self,
        weights: str = "imagenet",
        seed: int | None = None,
        precision: str = "fp32",
        channels_last: bool = True,
    ):
        if isinstance(weights, str) and weights == "imagenet" and seed is None and not imagenet_weights_path().is_file():
            raise self._unavailable(imagenet_weights_path())  # before importing torch (3-6 s)
        import torch

        if not isinstance(weights, (str, os.PathLike)):
            raise ValueError(f"weights must be 'imagenet', 'random' or a file path, got {weights!r}")
        weights = os.fspath(weights)
        self.precision = str(precision).lower()
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {precision!r}")
        self.channels_last = bool(channels_last)
        features = _build_features()
        if weights == "random":
            if seed is None:
                raise ValueError("weights='random' needs an explicit integer seed (seed=...)")
            seed = int(seed)
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for m in features.modules():
                    if isinstance(m, torch.nn.Conv2d):
                        fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                        std = (2.0 / fan_out) ** 0.5  # kaiming_normal_(mode="fan_out", relu)
                        m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
                        m.bias.zero_()
            self.weights_id = f"random:{seed}"
            self._weights_source = "random"
        else:
            if seed is not None:
                raise ValueError(f"seed is only used with weights='random' (weights={weights!r})")
            if weights == "imagenet":
                sd = self._load_imagenet()
                source = "imagenet"
            else:
                path = Path(weights).expanduser()
                if not path.is_file():
                    raise ValueError(
                        f"weights={weights!r}: no such file. Give 'imagenet', 'random' (with seed) "
                        "or the path of a VGG16 state dict (.pth)"
                    )
                try:
                    raw = torch.load(path, map_location="cpu", weights_only=True)
                except Exception as exc:  # noqa: BLE001 - re-raised with the path named
                    raise ValueError(
                        f"weights={weights!r}: cannot be read as a torch state dict ({exc})"
                    ) from exc
                sd = raw
                source = str(path)
            feats = _features_state_dict(sd, source)
            features.load_state_dict(feats, strict=True)
            self.weights_id = state_dict_sha256(features.state_dict())
            self._weights_source = source
        features.eval()
        for p in features.parameters():
            p.requires_grad_(False)
        self._features = features
        self._on_device: dict[str, Any] = {}
        self._seed = seed

    @staticmethod
    def _load_imagenet() -> dict:
        from torchvision.models import VGG16_Weights

        path = imagenet_weights_path()
        if not path.is_file():
            raise VGG16Encoder._unavailable(path)
        # torchvision's own loader: finds the cached file, checks its hash prefix, no download.
        return VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)

    @staticmethod
    def _unavailable(path: Path) -> "WeightsUnavailableError":
        return WeightsUnavailableError(
                "ImageNet weights for VGG16 are not available on this machine (mmlake never "
                f"downloads them): expected {path}. To provide them, either (a) on a machine with "
                "internet access run `python -c \"import torchvision; "
                "torchvision.models.vgg16(weights='IMAGENET1K_V1')\"` (it stores "
                f"{path.name} under $TORCH_HOME/hub/checkpoints, default ~/.cache/torch) and copy "
                f"that file to {path} (or set TORCH_HOME to the folder that holds hub/checkpoints/); "
                "or (b) use a local VGG16 state dict: `mmlake ingest --vgg16-weights /path/to/vgg16.pth`, "
                "or `vgg16_weights: /path/to/vgg16.pth` under `encoder:` in the lake's config file "
                "(<lake>/config.yaml or $MMLAKE_CONFIG; `make ui` reads it too)."
            )

    @property
    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "weights": self._weights_source,
            "precision": self.precision,
            "input_px": INPUT_PX,
            "channels_last": self.channels_last,
            "preprocess": "minmax01-per-chip,bilinear32,3ch,imagenet-norm",
        }
        if self._seed is not None:
            cfg["seed"] = self._seed
        return cfg

    def _model_on(self, device: str):
        import torch

        if device not in self._on_device:
            m = self._features if device == "cpu" else _clone_to(self._features, device)
            if self.channels_last:
                m = m.to(memory_format=torch.channels_last)
            self._on_device[device] = m
        return self._on_device[device]

    @staticmethod
    def preprocess(x):
        """(b, p, p) float32 tensor -> (b, 3, 32, 32) ImageNet-normalised tensor."""
        import torch
        import torch.nn.functional as F

        mn = x.amin(dim=(1, 2), keepdim=True)
        rng = x.amax(dim=(1, 2), keepdim=True) - mn
        x = torch.where(rng > 0, (x - mn) / torch.where(rng > 0, rng, torch.ones_like(rng)), 0.0)
        x = x.unsqueeze(1)
        if x.shape[-1] != INPUT_PX or x.shape[-2] != INPUT_PX:
            x = F.interpolate(x, size=(INPUT_PX, INPUT_PX), mode="bilinear", align_corners=False,
                              antialias=False)
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x.expand(-1, 3, -1, -1) - mean) / std

    def encode(self, chips, batch_size=256, device="cpu", *, image=None) -> np.ndarray:
        """(n, p, p) float32 chips -> (n, 512) float32. ``image`` is ignored (no context needed)."""
        import torch

        chips = check_chips(chips)
        batch_size = check_batch_size(batch_size)
        dev = resolve_device(device)
        amp = resolve_precision(self.precision, dev)
        n = chips.shape[0]
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        model = self._model_on(dev)
        ctx = (lambda: torch.autocast(device_type="cuda", dtype=amp)) if amp else nullcontext
        with torch.inference_mode():
            for s in range(0, n, batch_size):
                x = torch.from_numpy(chips[s : s + batch_size]).to(dev, non_blocking=True)
                x = self.preprocess(x)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with ctx():
                    y = model(x)
                out[s : s + len(x)] = y.float().reshape(len(x), -1).cpu().numpy()
        return out


def _clone_to(module, device: str):
    import copy

    return copy.deepcopy(module).to(device)
