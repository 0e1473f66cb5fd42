"""Static pictures (PNG bytes) for asset metadata and reports. matplotlib with the Agg backend."""

from __future__ import annotations

import io

import numpy as np


def _figure(n_panels: int, size: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n_panels, figsize=(size * n_panels, size), squeeze=False)
    return fig, axes[0]


def to_png(fig, dpi: int = 80) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def session_thumbnail(haadf: np.ndarray | None, count_map: np.ndarray | None, title: str) -> bytes:
    """HAADF image and EDS total-count map side by side."""
    panels = [(n, a) for n, a in (("HAADF", haadf), ("EDS counts / pixel", count_map)) if a is not None]
    fig, axes = _figure(len(panels))
    for ax, (name, img) in zip(axes, panels):
        ax.imshow(img, cmap="gray" if name == "HAADF" else "viridis")
        ax.set_title(f"{title}\n{name}", fontsize=8)
        ax.axis("off")
    return to_png(fig)


def chip_grid_thumbnail(haadf: np.ndarray | None, chip_counts: np.ndarray | None, chip_px: int, title: str) -> bytes:
    """HAADF with the chip grid drawn over it, and EDS counts per chip."""
    panels = [(n, a) for n, a in (("HAADF + chip grid", haadf), ("EDS counts / chip", chip_counts)) if a is not None]
    fig, axes = _figure(len(panels))
    for ax, (name, img) in zip(axes, panels):
        ax.imshow(img, cmap="gray" if haadf is img else "viridis")
        if img is haadf:
            h, w = img.shape
            for y in range(0, h - chip_px + 1, chip_px):
                ax.axhline(y - 0.5, color="yellow", lw=0.3)
            for x in range(0, w - chip_px + 1, chip_px):
                ax.axvline(x - 0.5, color="yellow", lw=0.3)
        ax.set_title(f"{title}\n{name}", fontsize=8)
        ax.axis("off")
    return to_png(fig)
