"""Encoder benchmarks shared by bench/encoders.py and the tests.

1. **atomagined few-shot** (images mmlake did not generate): PRISM-simulated atomic-resolution
   HAADF of ICSD structure prototypes (``../shared/data/atomagined/``, MIT licence, never copied into
   the repository). Fixed protocol:

   - classes: the 8 oriented supercells of ``retrieval/targets/png`` (``CCCCCC.UVWUVW``);
   - images: the 250x250 PNGs as grey levels (mean of R, G, B), a 5-px margin cut away (the
     simulations do not respect periodic boundaries at the edges), leaving 240x240 = a 5x5 grid of
     48-px chips (about 5 Angstrom, a few unit cells): 25 chips per image, chip_index = row * 5 + col;
   - support: 5 chips per class drawn (without replacement, ``numpy.random.default_rng(seed + draw)``)
     from the class's ``stem00-clean`` image;
   - queries: all 25 chips of each class's image of each of the 16 conditions (200 per condition);
   - classification: nearest prototype (mean support embedding per class), Euclidean distance --
     exactly :class:`mmlake.segment.FewShotSegmenter` on one modality (its block standardisation does
     not change nearest-prototype decisions);
   - score: top-1 accuracy per condition, averaged over 5 support draws; the summary is the mean over
     the 16 conditions and the worst condition.

   Encoders get each image's chip stack *and* the image (``encode(chips, image=...)``), so encoders
   that use context around a chip (fft, effnet, ssl) see the 240-px image around it (mirrored at its
   edges).

2. **demo-campaign HAADF-alone few-shot AMI**: for each session of ``mmlake.synth.DEMO_CAMPAIGN``,
   embed the HAADF chips, classify them with ``FewShotSegmenter`` on the HAADF modality alone with the
   session's own support chips (``synth.support_chips``: 4 per class), and score the AMI of the labels
   against the chips' majority truth.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

CHIP_PX = 48
MARGIN_PX = 5
GRID = 5  # chips per side: (250 - 2 * 5) / 48
N_SUPPORT = 5
N_DRAWS = 5
SUPPORT_CONDITION = "stem00-clean"
CONDITIONS = (
    "raw", "stem00-clean", "stem00-blur1", "stem00-blur2", "stem00-cnts1", "stem00-cnts2",
    "stem00-scan1", "stem00-scan2", "stem00-bkgd1", "stem00-bkgd2", "stem00-dfct1", "stem00-dfct2",
    "stem00-blbk1", "stem00-blbk2", "stem01-comb1", "stem02-comb2",
)

#: encode(chips (n, p, p) float32, image (H, W) float32) -> (n, d) features
EncodeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def default_atomagined_root() -> Path:
    """``$MMLAKE_ATOMAGINED`` or ``../shared/data/atomagined`` relative to the repository root."""
    env = os.environ.get("MMLAKE_ATOMAGINED")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "atomagined"


@dataclass
class AtomaginedTask:
    root: Path
    classes: list[str]
    conditions: list[str]
    images: dict[tuple[str, str], np.ndarray]  # (class, condition) -> (240, 240) float32
    supports: list[dict[str, np.ndarray]] = field(default_factory=list)  # per draw: class -> chip indices

    def chips(self, cls: str, cond: str) -> np.ndarray:
        from mmlake.chips import ChipGrid

        return ChipGrid(CHIP_PX, GRID, GRID).tiles(self.images[(cls, cond)]).astype(np.float32)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return a.mean(axis=2)


def load_atomagined(root: str | os.PathLike | None = None, conditions: Iterable[str] | None = None,
                    n_draws: int = N_DRAWS, n_support: int = N_SUPPORT, seed: int = 0) -> AtomaginedTask:
    """The few-shot task of the protocol above (FileNotFoundError naming the folder when absent)."""
    root = Path(root) if root is not None else default_atomagined_root()
    png = root / "retrieval" / "targets" / "png"
    if not png.is_dir():
        raise FileNotFoundError(f"atomagined data not found: {png} does not exist (expected the shared "
                                "development data at ../shared/data/atomagined, or set $MMLAKE_ATOMAGINED)")
    classes = sorted({p.name.split("-")[0] for p in png.glob("*.png")})
    conds = list(conditions) if conditions is not None else list(CONDITIONS)
    if SUPPORT_CONDITION not in conds:
        conds = [SUPPORT_CONDITION, *conds]
    images = {}
    for c in classes:
        for cond in conds:
            f = png / f"{c}-{cond}.png"
            if not f.is_file():
                raise FileNotFoundError(f"atomagined: missing {f}")
            a = _read_png(f)
            images[(c, cond)] = a[MARGIN_PX:MARGIN_PX + GRID * CHIP_PX, MARGIN_PX:MARGIN_PX + GRID * CHIP_PX]
    supports = []
    for d in range(n_draws):
        rng = np.random.default_rng(seed + d)
        supports.append({c: np.sort(rng.choice(GRID * GRID, n_support, replace=False)) for c in classes})
    return AtomaginedTask(root, classes, conds, images, supports)


def embed_task(task: AtomaginedTask, encode: EncodeFn) -> dict[tuple[str, str], np.ndarray]:
    """Features of every image's 25 chips: (class, condition) -> (25, d)."""
    return {(c, cond): np.asarray(encode(task.chips(c, cond), task.images[(c, cond)]), dtype=np.float64)
            for (c, cond) in task.images}


def nearest_prototype(support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray) -> np.ndarray:
    """Class index of the nearest prototype (mean support vector per class), Euclidean distance."""
    classes = np.unique(support_y)
    protos = np.stack([support_x[support_y == k].mean(axis=0) for k in classes])
    d2 = (query_x * query_x).sum(1)[:, None] - 2.0 * query_x @ protos.T + (protos * protos).sum(1)[None, :]
    return classes[np.argmin(d2, axis=1)]


def score_task(task: AtomaginedTask, feats: dict[tuple[str, str], np.ndarray],
               conditions: Iterable[str] | None = None) -> dict:
    """Top-1 per condition (mean over draws), per draw, and the mean / worst over conditions."""
    conds = list(conditions) if conditions is not None else [c for c in CONDITIONS if c in task.conditions]
    per_draw = {cond: [] for cond in conds}
    for sup in task.supports:
        sx = np.concatenate([feats[(c, SUPPORT_CONDITION)][sup[c]] for c in task.classes])
        sy = np.concatenate([np.full(len(sup[c]), k) for k, c in enumerate(task.classes)])
        for cond in conds:
            qx = np.concatenate([feats[(c, cond)] for c in task.classes])
            qy = np.repeat(np.arange(len(task.classes)), GRID * GRID)
            per_draw[cond].append(float(np.mean(nearest_prototype(sx, sy, qx) == qy)))
    per_cond = {cond: float(np.mean(v)) for cond, v in per_draw.items()}
    worst = min(per_cond, key=per_cond.get)
    return {"top1": per_cond, "per_draw": per_draw, "mean": float(np.mean(list(per_cond.values()))),
            "worst": per_cond[worst], "worst_condition": worst, "n_draws": len(task.supports),
            "n_classes": len(task.classes)}


def atomagined_fewshot(encode: EncodeFn, task: AtomaginedTask | None = None, **load_kw) -> dict:
    """Run the whole atomagined few-shot protocol for one encoder."""
    task = task or load_atomagined(**load_kw)
    t0 = time.perf_counter()
    feats = embed_task(task, encode)
    out = score_task(task, feats)
    out["encode_s"] = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------------------------------------
# demo campaign
@dataclass
class DemoSession:
    session_id: str
    image: np.ndarray          # HAADF, cropped to the chip grid
    chips: np.ndarray          # (n, p, p) float32
    truth: np.ndarray          # (n,) majority class per chip
    support: dict[str, list[int]]  # class -> chip indices
    n_cols: int
    eds: np.ndarray | None = None  # (n, channels) chip sums when loaded


def demo_sessions(specs=None, with_eds: bool = False) -> list[DemoSession]:
    """The synthetic demo sessions' HAADF chips, chip truth and support (no lake needed)."""
    from mmlake import synth
    from mmlake.chips import ChipGrid, majority_labels, sum_eds_chips

    out = []
    for spec in specs if specs is not None else synth.DEMO_CAMPAIGN:
        geom = synth.make_geometry(spec)
        haadf = synth.make_haadf(spec, geom)
        grid = ChipGrid.fit(haadf.shape, spec.chip_px)
        sup = synth.support_chips(geom.truth, spec.chip_px)
        eds = None
        if with_eds:
            eds, _ = sum_eds_chips(synth.make_eds(spec, geom), grid, spec.session_id)
        out.append(DemoSession(spec.session_id, grid.crop(haadf).astype(np.float32),
                               grid.tiles(haadf).astype(np.float32), majority_labels(geom.truth, grid),
                               {c: [r * grid.n_cols + cc for r, cc in v] for c, v in sup.items()}, grid.n_cols, eds))
    return out


def demo_haadf_ami(encode: EncodeFn, sessions: list[DemoSession] | None = None) -> dict[str, float]:
    """HAADF-alone few-shot AMI against truth per demo session."""
    from mmlake.segment import FewShotSegmenter, ami

    sessions = sessions if sessions is not None else demo_sessions()
    out = {}
    for s in sessions:
        x = np.asarray(encode(s.chips, s.image), dtype=np.float64)
        labels = FewShotSegmenter(support=s.support).fit_predict({"haadf": x})
        out[s.session_id] = ami(labels, s.truth)
    return out
