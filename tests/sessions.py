"""Tiny hand-made sessions for tests: calibrated .hspy files plus session.yaml."""

from pathlib import Path

import numpy as np
import yaml


def write_manifest(folder: Path, **fields) -> Path:
    base = {"campaign": "test", "sample": folder.name.lower(), "dose_dpa": 0,
            "acquired_at": "2024-05-01T12:00:00", "instrument": {"name": "Themis Z", "beam_kv": 300}}
    base.update(fields)
    base = {k: v for k, v in base.items() if v is not None}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "session.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    return folder


def make_tiny_session(folder: Path, haadf_shape=(32, 32), eds_shape=(32, 32), channels=256,
                      counts_per_px=20.0, seed=0, **manifest) -> Path:
    """A small calibrated HAADF + EDS session written as .hspy through HyperSpy."""
    import hyperspy.api as hs

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    if haadf_shape is not None:
        im = hs.signals.Signal2D(rng.random(haadf_shape, dtype=np.float32))
        for ax in im.axes_manager.signal_axes:
            ax.scale, ax.units = 0.05 * eds_shape[0] / haadf_shape[0] if eds_shape else 0.05, "nm"
        im.metadata.General.title = "HAADF"
        im.save(folder / "haadf.hspy", overwrite=True)
        manifest.setdefault("haadf", "haadf.hspy")
    if eds_shape is not None:
        lam = np.full(channels, counts_per_px / channels)
        cube = rng.poisson(lam, size=(*eds_shape, channels)).astype(np.uint16)
        s = hs.signals.Signal1D(cube)
        s.set_signal_type("EDS_TEM")
        e = s.axes_manager.signal_axes[0]
        e.scale, e.offset, e.units, e.name = 0.04, 0.0, "keV", "Energy"
        for ax in s.axes_manager.navigation_axes:
            ax.scale, ax.units = 0.05, "nm"
        s.save(folder / "eds.hspy", overwrite=True)
        manifest.setdefault("eds", "eds.hspy")
    manifest.setdefault("chip_px", 8)
    return write_manifest(folder, **manifest)


def sid(sample: str, dose=0, campaign: str = "test", acquisition: str = "20240501T120000") -> str:
    """The session id `write_manifest`'s defaults give (see mmlake.manifest.make_session_id)."""
    from mmlake.manifest import make_session_id

    return make_session_id(campaign, sample, dose, acquisition)


def demo_sid(lake, sample: str, dose) -> str:
    """The session id of a demo-campaign session (one acquisition per sample x dose)."""
    rows = lake.query("select session_id from sessions where sample = ? and dose_dpa = ?", [sample, float(dose)])
    assert len(rows) == 1, rows
    return rows["session_id"][0]
