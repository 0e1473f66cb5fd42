"""Reading chips and chip features back from the lake as arrays in chip_index order.

The segmenters and descriptors take plain (n_chips, d) arrays; this module is the one place that
knows which table holds which modality and how NULLs become arrays.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mmlake.chips import ChipGrid
from mmlake.errors import SessionError
from mmlake.lake import Lake


def load_grid(lake: Lake, session_id: str) -> tuple[dict[str, Any], ChipGrid]:
    """The chip_grids row of a session and its ChipGrid."""
    rows = lake.query("select * from chip_grids where session_id = ?", [session_id]).to_dicts()
    if not rows:
        raise SessionError(session_id, "chips have not been materialized for this session")
    r = rows[0]
    return r, ChipGrid(r["chip_px"], r["n_rows"], r["n_cols"], r["origin_y"], r["origin_x"])


def session_row(lake: Lake, session_id: str) -> dict[str, Any]:
    rows = lake.query("select * from sessions where session_id = ?", [session_id]).to_dicts()
    if not rows:
        raise SessionError(session_id, "raw_session has not been materialized for this session")
    row = rows[0]
    row["manifest"] = json.loads(row["manifest"])
    return row


def haadf_features(lake: Lake, session_id: str, encoder: str) -> np.ndarray | None:
    """(n_chips, dim) float32 vectors of one encoder, or None when the set is absent/skipped."""
    frame = lake.query("select vector from haadf_embeddings where session_id = ? and encoder = ? "
                       "order by chip_index", [session_id, encoder])
    if not len(frame):
        return None
    return np.asarray(frame["vector"].to_list(), dtype=np.float32)


def available_haadf_encoders(lake: Lake, session_id: str) -> list[str]:
    frame = lake.query("select feature_set from feature_sets where session_id = ? and modality = 'haadf' "
                       "and status = 'ok' order by feature_set", [session_id])
    return frame["feature_set"].to_list()


def eds_composition(lake: Lake, session_id: str) -> tuple[np.ndarray, list[str]] | None:
    """(n_chips, n_elements) atomic percents (NaN where a chip has no counts) and the element order."""
    frame = lake.query("select chip_index, element, atomic_percent from eds_composition where session_id = ? "
                       "order by chip_index, element", [session_id])
    if not len(frame):
        return None
    wide = frame.pivot(on="element", index="chip_index", values="atomic_percent").sort("chip_index")
    elements = [c for c in wide.columns if c != "chip_index"]
    return wide.select(elements).to_numpy().astype(np.float64), elements


def fill_missing(features: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace NaN cells (chips without counts) by the column mean, so those chips sit at the centre of
    the feature space instead of breaking distance computations; columns with no value at all are
    dropped. Returns the features and the number of chips that had a gap."""
    bad = ~np.isfinite(features)
    features = features[:, ~bad.all(axis=0)]
    bad = ~np.isfinite(features)
    n_bad = int(bad.any(axis=1).sum())
    if n_bad:
        means = np.nanmean(np.where(bad, np.nan, features), axis=0)
        features = np.where(bad, means[None, :], features)
    return features, n_bad
