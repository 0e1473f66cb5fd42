"""The chip-encoder interface.

An encoder turns a HAADF chip stack (float32 ``(n, p, p)``, see docs/conventions.md) into one
float32 vector per chip. Every encoder exposes, for provenance:

- ``name``: stable registry name (``"vgg16"``, ``"fft"``),
- ``version``: bumped whenever the numbers it produces change for the same input,
- ``weights_id``: ``"sha256:<hex>"`` of the state dict, ``"random:<seed>"``, or ``"none"``,
- ``dim``: length of the vectors,
- ``config``: the parameters it was built with (JSON-serialisable).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class ChipEncoder(ABC):
    name: str = ""
    version: str = ""
    weights_id: str = "none"
    dim: int = 0

    @property
    def config(self) -> dict[str, Any]:
        return {}

    def provenance(self) -> dict[str, Any]:
        """Everything a lake row needs to say which encoder produced a vector."""
        return {
            "encoder": self.name,
            "encoder_version": self.version,
            "weights_id": self.weights_id,
            "dim": self.dim,
            "config": self.config,
        }

    @abstractmethod
    def encode(
        self,
        chips: np.ndarray,
        batch_size: int = 256,
        device: str = "cpu",
        *,
        image: np.ndarray | None = None,
    ) -> np.ndarray:
        """Encode a chip stack ``(n, p, p)`` to ``(n, dim)`` float32.

        ``image`` is the whole HAADF image the chips were cut from (grid origin (0, 0), chip_index =
        row * n_cols + col). Encoders that need context around a chip (``fft``) use it; the others
        ignore it.
        """


def check_chips(chips: np.ndarray) -> np.ndarray:
    """Validate a chip stack and return it as a C-contiguous float32 array."""
    a = np.asarray(chips)
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] < 1:
        raise ValueError(f"chips must be a float array of shape (n, p, p), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"chips must be numeric, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise ValueError("chips contain NaN or infinite values")
    return a


def check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)
