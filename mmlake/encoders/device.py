"""Device and precision selection shared by every torch encoder."""

from __future__ import annotations

_DEVICES = ("auto", "cpu", "cuda")
_PRECISIONS = ("fp32", "bf16", "fp16")


def _gpu_driver_present() -> bool:
    """False only where CUDA surely cannot be used without asking torch: Linux without the NVIDIA
    (or ROCm) kernel driver's files. True elsewhere, and whenever torch is imported already."""
    import os
    import sys

    if "torch" in sys.modules or not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0",
                                           "/dev/kfd"))


def resolve_device(device: str = "auto") -> str:
    """Return the torch device string to run on.

    ``"auto"`` picks ``"cuda"`` when a CUDA device is usable, else ``"cpu"``. ``"cuda"`` (or
    ``"cuda:N"``) on a machine without a usable CUDA device raises ``ValueError`` naming the
    argument, instead of failing later inside torch.
    """
    if not isinstance(device, str):
        raise ValueError(f"device must be one of {_DEVICES} (or 'cuda:N'), got {device!r}")
    d = device.strip().lower()
    if d == "cpu":
        return "cpu"
    if d == "auto" and not _gpu_driver_present():
        return "cpu"  # no GPU driver: torch.cuda cannot be available, and torch (3-6 s) stays unimported
    import torch

    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d == "cuda" or d.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this machine "
                f"(torch {torch.__version__}, torch.cuda.is_available() is False). "
                "Use device='cpu' or device='auto', or run on a host with an NVIDIA GPU and a "
                "CUDA build of torch."
            )
        if ":" in d:
            idx = int(d.split(":", 1)[1])
            if idx >= torch.cuda.device_count():
                raise ValueError(
                    f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) visible"
                )
        return d
    raise ValueError(f"device must be one of {_DEVICES} (or 'cuda:N'), got {device!r}")


def resolve_precision(precision: str, device: str):
    """Map a precision name to the autocast dtype (``None`` for fp32).

    bf16/fp16 run under ``torch.autocast`` and are only allowed on CUDA: on CPU they are either
    slow (fp16) or change results in ways the lake's provenance would not show, so they are refused.
    """
    import torch

    p = str(precision).lower()
    if p not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    if p == "fp32":
        return None
    if not device.startswith("cuda"):
        raise ValueError(
            f"precision={precision!r} is only supported on CUDA (device is {device!r}); "
            "use precision='fp32' on CPU"
        )
    return torch.bfloat16 if p == "bf16" else torch.float16
