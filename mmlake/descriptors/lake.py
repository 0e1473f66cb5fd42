"""Descriptors from what the lake holds: labels and class names of every segmentation, ground truth,
and :func:`describe_lake_session`."""

from __future__ import annotations

import numpy as np
import polars as pl

from mmlake.descriptors.frames import DescriptorTables
from mmlake.descriptors.session import describe_session


def labels_by_segmentation(labels: pl.DataFrame, n_chips: int) -> dict[tuple[str, str], np.ndarray]:
    """``segment_labels`` rows (method, modality, chip_index, label) -> ``{(method, modality):
    labels (n_chips,)}``; chips without a row get -1 (unassigned)."""
    need = {"method", "modality", "chip_index", "label"}
    if not need <= set(labels.columns):
        raise ValueError(f"labels frame needs columns {sorted(need)}, got {labels.columns}")
    segs: dict[tuple[str, str], np.ndarray] = {}
    for (m, mod), part in labels.group_by(["method", "modality"], maintain_order=True):
        arr = np.full(n_chips, -1, dtype=np.int64)
        idx = part["chip_index"].to_numpy()
        if idx.size and (idx.min() < 0 or idx.max() >= n_chips):
            raise ValueError(f"labels of {m}/{mod}: chip_index outside 0..{n_chips - 1}")
        arr[idx] = part["label"].fill_null(-1).to_numpy()
        segs[(str(m), str(mod))] = arr
    return segs


def class_names_from_runs(runs: pl.DataFrame) -> dict[tuple[str, str], list[str]]:
    """``segment_runs`` rows -> ``{(method, modality): class_names}`` for the labellings that have
    class names (few-shot). Label i is ``class_names[i]`` (0-based here; 1-based in SQL lists)."""
    out = {}
    if runs is None or runs.is_empty() or "class_names" not in runs.columns:
        return out
    for r in runs.iter_rows(named=True):
        if r["class_names"]:
            out[(str(r["method"]), str(r["modality"]))] = [str(c) for c in r["class_names"]]
    return out


def _has_table(lake, name: str) -> bool:
    return bool(lake.query("select count(*) as n from information_schema.tables where table_name = ?",
                           [name])["n"][0])


def describe_lake_session(lake, session_id: str, *, include_truth: bool = True, **kwargs) -> DescriptorTables:
    """:func:`describe_session` on what the lake holds for ``session_id``: the ``sessions`` row
    (beam kV, elements, pixel size, detector resolution, manifest k-factors, ``roles:`` and
    ``truth_classes``), the chip grid with its HAADF stack and EDS sums (``chip_grids`` objects), every
    ``segment_labels`` labelling with the class names of ``segment_runs`` (few-shot), and, with
    ``include_truth``, the ground truth (``chips.truth_label``) as method/modality ``truth/truth`` named
    by ``truth_classes`` (unless segment_labels already holds a ``truth/truth`` labelling). Missing
    tables or outputs mean fewer labellings, never an error. Keyword arguments go to :func:`describe_session` (``shift_elements``, ``role_rule``, ``square``, ...)."""
    from mmlake.features import load_grid, session_row

    with lake.reading():  # one connection for the reads; describe_session computes after it closes
        sess = session_row(lake, session_id)
        grid_row, grid = load_grid(lake, session_id)
        manifest = sess.get("manifest") or {}
        haadf = None
        if grid_row.get("haadf_stack_sha"):
            haadf = grid.untile(np.asarray(lake.get_array(grid_row["haadf_stack_sha"]), dtype=np.float32))
        sums = lake.get_array(grid_row["eds_sums_sha"]) if grid_row.get("eds_sums_sha") else None
        energy = ((float(grid_row["energy_offset_kev"]), float(grid_row["energy_scale_kev"]))
                  if sums is not None else None)
        frames = []
        class_names: dict = {}
        if _has_table(lake, "segment_labels"):
            frames.append(lake.query("select method, modality, chip_index, label from segment_labels "
                                     "where session_id = ? order by method, modality, chip_index", [session_id]))
        if _has_table(lake, "segment_runs"):
            class_names.update(class_names_from_runs(lake.query(
                "select method, modality, class_names from segment_runs where session_id = ?", [session_id])))
        if include_truth:
            truth = lake.query("select chip_index, truth_label from chips where session_id = ? "
                               "and truth_label is not null order by chip_index", [session_id])
            have = any(len(f.filter((pl.col("method") == "truth") & (pl.col("modality") == "truth"))) for f in frames)
            if len(truth) == grid.n_chips and not have:
                frames.append(pl.DataFrame({"method": "truth", "modality": "truth",
                                            "chip_index": truth["chip_index"], "label": truth["truth_label"]}))
    if manifest.get("truth_classes"):  # every "truth" labelling is named by the manifest's classes
        class_names.setdefault("truth", [str(c) for c in manifest["truth_classes"]])
    labels = (pl.concat([f.select(pl.col("method").cast(pl.Utf8), pl.col("modality").cast(pl.Utf8),
                                  pl.col("chip_index").cast(pl.Int64), pl.col("label").cast(pl.Int64))
                         for f in frames]) if frames else
              pl.DataFrame(schema={"method": pl.Utf8, "modality": pl.Utf8, "chip_index": pl.Int64, "label": pl.Int64}))
    kwargs.setdefault("role_overrides", manifest.get("roles") or None)
    kwargs.setdefault("energy_resolution_mnka_ev", float(sess.get("eds_resolution_mnka_ev") or 130.0))
    return describe_session(
        labels, grid, haadf, sums, energy, float(sess.get("beam_kv") or 300.0), list(sess.get("elements") or []),
        manifest.get("kfactors") or None, float(grid_row.get("pixel_size_nm") or sess.get("pixel_size_nm")),
        session_id=session_id, class_names=class_names, **kwargs)
