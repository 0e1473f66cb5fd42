"""`session.yaml`: the manifest a microscope session folder carries, parsed and validated.

Validation happens before any data file is opened, so a typo costs milliseconds and the message
names the session folder, the field and what was expected.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmlake.eds.lines import element_symbols
from mmlake.errors import SessionError

MANIFEST_NAME = "session.yaml"
SAMPLE_RE = re.compile(r"^[a-z0-9_.-]+$")
# every suffix RosettaSciIO reads that mmlake accepts (mmlake.formats.SUFFIXES says what each is)
DATA_SUFFIXES = {".emd", ".bcf", ".hspy", ".zspy", ".dm3", ".dm4", ".npy", ".ser", ".emi", ".pts", ".asw",
                 ".mrc", ".tif", ".tiff", ".jpg", ".jpeg", ".png", ".bmp"}
# top-level session.yaml keys; any other key is a warning naming the closest of these (an error with strict)
KNOWN_KEYS = ("campaign", "sample", "dose_dpa", "acquired_at", "acquisition", "instrument", "haadf", "eds",
              "data", "elements", "chip_px", "support", "truth", "truth_classes", "kfactors", "roles",
              "pixel_size_nm", "energy_scale_kev", "energy_offset_kev", "notes",
              "session_id", "synthetic")  # the last two: written by mmlake.synth, informational


def dose_key(dose_dpa: float) -> str:
    """Partition-safe text of a dose: 0 -> '0', 0.1 -> '0.1'."""
    return f"{float(dose_dpa):g}"


CAMPAIGN_KEY_RE = re.compile(r"[^a-z0-9]+")
ACQUISITION_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def campaign_key(campaign: str) -> str:
    """Partition-safe slug of a campaign name: 'LFO irradiation 2024' -> 'lfo-irradiation-2024'.

    It has no '.', so the first '.' of a sample key separates campaign from sample."""
    slug = CAMPAIGN_KEY_RE.sub("-", campaign.lower()).strip("-")
    return slug or "campaign"


def make_sample_key(campaign: str, sample: str) -> str:
    """The sample partition key, unique across campaigns: '<campaign key>.<sample>'."""
    return f"{campaign_key(campaign)}.{sample}"


def acquisition_key(acquired_at: dt.datetime, acquisition: str | None = None) -> str:
    """The acquisition part of a session's identity: the manifest's `acquisition` name, else the
    acquisition time in UTC to the second ('20240501T143000')."""
    if acquisition:
        return acquisition
    return acquired_at.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")


def make_session_id(campaign: str, sample: str, dose_dpa: float, acquisition: str) -> str:
    """One acquisition: '<campaign key>.<sample>@<dose>~<acquisition>', unique across the lake."""
    return f"{make_sample_key(campaign, sample)}@{dose_key(dose_dpa)}~{acquisition}"


@dataclass(frozen=True)
class Manifest:
    """A validated session manifest. Paths stay relative to the session folder."""

    campaign: str
    sample: str
    dose_dpa: float
    acquired_at: dt.datetime
    instrument_name: str
    beam_kv: float
    haadf: str | None = None
    eds: str | None = None
    data: str | None = None
    elements: tuple[str, ...] = ()
    chip_px: int | None = None
    support: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    truth: str | None = None
    truth_classes: tuple[str, ...] = ()
    kfactors: dict[str, float] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    acquisition_name: str | None = None
    # calibration for files that lack one (an override where the file has one; recorded as
    # calibration_source = 'manifest' in the sessions row)
    pixel_size_nm: float | None = None
    energy_scale_kev: float | None = None
    energy_offset_kev: float | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def acquisition(self) -> str:
        return acquisition_key(self.acquired_at, self.acquisition_name)

    @property
    def sample_key(self) -> str:
        return make_sample_key(self.campaign, self.sample)

    @property
    def session_id(self) -> str:
        return make_session_id(self.campaign, self.sample, self.dose_dpa, self.acquisition)

    @property
    def partition_id(self) -> str:
        """The sample x dose pair this acquisition belongs to: '<sample key>@<dose>'."""
        return f"{self.sample_key}@{self.dose_key}"

    @property
    def dose_key(self) -> str:
        return dose_key(self.dose_dpa)

    def files(self) -> dict[str, str]:
        """Role -> relative path of every data file the manifest names."""
        return {r: p for r, p in (("haadf", self.haadf), ("eds", self.eds), ("data", self.data),
                                  ("truth", self.truth)) if p}


def load_manifest(folder: str | os.PathLike, strict: bool = False) -> Manifest:
    """Read and validate `folder/session.yaml` (`strict`: unknown keys are errors, see parse_manifest)."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    label = folder.name or str(folder)
    if not path.is_file():
        raise SessionError(label, f"no {MANIFEST_NAME} in {folder}; every session folder needs one "
                                  "(see README, 'Session folders')")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SessionError(label, f"{MANIFEST_NAME} is not valid YAML: {exc}") from exc
    return parse_manifest(raw, folder, strict=strict)


def parse_manifest(raw: Any, folder: str | os.PathLike, check_files: bool = True,
                   strict: bool = False) -> Manifest:
    """Validate a manifest mapping; every problem raises SessionError naming the field.

    `check_files=False` skips the on-disk path checks, for manifests re-read from the lake whose
    files live in the object folder. A key that is not in KNOWN_KEYS (a typo such as `chip_size:`)
    is a warning naming the closest known key, kept in `Manifest.warnings` and issued with
    `warnings.warn`; `strict=True` makes it an error.
    """
    folder = Path(folder)
    label = folder.name or str(folder)
    if not isinstance(raw, dict):
        raise SessionError(label, f"{MANIFEST_NAME} must be a mapping of fields, got {type(raw).__name__}")
    if isinstance(raw.get("sample"), str) and isinstance(raw.get("dose_dpa"), (int, float)) \
            and not isinstance(raw.get("dose_dpa"), bool):
        label = f"{raw['sample']}@{dose_key(raw['dose_dpa'])}"
        if isinstance(raw.get("campaign"), str):
            label = f"{make_sample_key(raw['campaign'], raw['sample'])}@{dose_key(raw['dose_dpa'])}"

    def fail(msg: str) -> SessionError:
        return SessionError(label, f"{MANIFEST_NAME}: {msg}")

    def need(name: str, kinds: tuple[type, ...], what: str) -> Any:
        if name not in raw or raw[name] is None:
            raise fail(f"missing required field '{name}' ({what})")
        value = raw[name]
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise fail(f"field '{name}' must be {what}, got {value!r}")
        return value

    campaign = need("campaign", (str,), "text")
    sample = need("sample", (str,), "text matching [a-z0-9_.-]+")
    if not SAMPLE_RE.match(sample):
        raise fail(f"field 'sample' must match [a-z0-9_.-]+ (lower case, no spaces), got {sample!r}")
    dose = float(need("dose_dpa", (int, float), "a number (displacements per atom)"))
    if not dose >= 0:
        raise fail(f"field 'dose_dpa' must be >= 0, got {dose}")
    acquired = raw.get("acquired_at")
    if isinstance(acquired, dt.date) and not isinstance(acquired, dt.datetime):
        acquired = dt.datetime.combine(acquired, dt.time())
    if isinstance(acquired, str):
        try:
            acquired = dt.datetime.fromisoformat(acquired)
        except ValueError:
            raise fail(f"field 'acquired_at' must be ISO 8601 (e.g. 2024-05-01T14:30:00), got {acquired!r}")
    if not isinstance(acquired, dt.datetime):
        raise fail("missing required field 'acquired_at' (ISO 8601 date-time)")
    if acquired.tzinfo is None:
        acquired = acquired.replace(tzinfo=dt.timezone.utc)
    acquisition = raw.get("acquisition")
    if acquisition is not None:
        if isinstance(acquisition, (int, float)) and not isinstance(acquisition, bool):
            acquisition = str(acquisition)
        if not isinstance(acquisition, str) or not ACQUISITION_RE.match(acquisition):
            raise fail(f"field 'acquisition' must be a short name of letters, digits, '_', '.', '-' "
                       f"(e.g. map2), got {acquisition!r}")
    inst = need("instrument", (dict,), "a mapping with 'name' and 'beam_kv'")
    if not isinstance(inst.get("name"), str):
        raise fail("field 'instrument.name' must be text")
    if not isinstance(inst.get("beam_kv"), (int, float)) or isinstance(inst.get("beam_kv"), bool) \
            or not inst["beam_kv"] > 0:
        raise fail(f"field 'instrument.beam_kv' must be a positive number, got {inst.get('beam_kv')!r}")

    paths = {}
    for key in ("haadf", "eds", "data", "truth"):
        if raw.get(key) is not None:
            if not isinstance(raw[key], str):
                raise fail(f"field '{key}' must be a file path relative to the session folder")
            paths[key] = _safe_relpath(raw[key], folder, key, fail) if check_files else raw[key]
    if "data" in paths and ({"haadf", "eds"} & paths.keys()):
        raise fail("give either 'data' (one Velox .emd / Bruker .bcf with both modalities) or "
                   "'haadf'/'eds', not both")
    if not ({"haadf", "eds", "data"} & paths.keys()):
        raise fail("names no data file: give 'haadf' and/or 'eds', or 'data'")

    elements = raw.get("elements") or []
    if not isinstance(elements, list) or not all(isinstance(e, str) for e in elements):
        raise fail(f"field 'elements' must be a list of element symbols, got {elements!r}")
    if elements:
        known = element_symbols()
        unknown = [e for e in elements if e not in known]
        if unknown:
            raise fail(f"unknown element symbol(s) {unknown}; use symbols like Fe, La, O (case matters)")

    chip_px = raw.get("chip_px")
    if chip_px is not None:
        if not isinstance(chip_px, int) or isinstance(chip_px, bool):
            raise fail(f"field 'chip_px' must be a whole number of pixels, got {chip_px!r}")
        if chip_px < 2:
            raise fail(f"field 'chip_px' must be >= 2 pixels, got {chip_px}")

    support_raw = raw.get("support") or {}
    if not isinstance(support_raw, dict):
        raise fail("field 'support' must map class names to lists of [row, col] chip indices")
    support = {}
    for cls, chips in support_raw.items():
        if not isinstance(chips, list) or not chips:
            raise fail(f"support class {cls!r} has no chips; give at least one [row, col]")
        pairs = []
        for rc in chips:
            if not (isinstance(rc, (list, tuple)) and len(rc) == 2 and all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in rc)):
                raise fail(f"support class {cls!r}: {rc!r} is not a [row, col] pair of chip indices >= 0")
            pairs.append((rc[0], rc[1]))
        support[str(cls)] = tuple(pairs)

    kf_raw = raw.get("kfactors") or {}
    if not isinstance(kf_raw, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in kf_raw.values()):
        raise fail("field 'kfactors' must map X-ray lines (e.g. Fe_Ka) to positive numbers")
    roles_raw = raw.get("roles") or {}
    if not isinstance(roles_raw, dict):
        raise fail("field 'roles' must map region labels or class names to roles")
    classes = raw.get("truth_classes") or []
    if not isinstance(classes, list):
        raise fail("field 'truth_classes' must be a list of class names indexed by label")
    calib = {}
    for key in ("pixel_size_nm", "energy_scale_kev", "energy_offset_kev"):
        value = raw.get(key)
        if value is not None:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value \
                    or abs(value) == float("inf"):
                raise fail(f"field '{key}' must be a number, got {value!r}")
            if key != "energy_offset_kev" and not value > 0:
                raise fail(f"field '{key}' must be > 0, got {value!r}")
            value = float(value)
        calib[key] = value
    if calib["energy_offset_kev"] is not None and calib["energy_scale_kev"] is None:
        raise fail("field 'energy_offset_kev' needs 'energy_scale_kev' (keV per channel) beside it")
    notes = unknown_key_notes(raw)
    if notes and strict:
        raise fail("; ".join(notes) + " (strict mode: fix or remove the key)")
    for note in notes:
        import warnings

        warnings.warn(f"session {label}: {MANIFEST_NAME}: {note}", stacklevel=2)
    notes = [f"{MANIFEST_NAME}: {n}" for n in notes]

    return Manifest(
        campaign=campaign, sample=sample, dose_dpa=dose, acquired_at=acquired,
        instrument_name=inst["name"], beam_kv=float(inst["beam_kv"]),
        haadf=paths.get("haadf"), eds=paths.get("eds"), data=paths.get("data"),
        elements=tuple(elements), chip_px=chip_px, support=support, truth=paths.get("truth"),
        truth_classes=tuple(str(c) for c in classes),
        kfactors={str(k): float(v) for k, v in kf_raw.items()},
        roles={str(k): str(v) for k, v in roles_raw.items()}, acquisition_name=acquisition,
        pixel_size_nm=calib["pixel_size_nm"], energy_scale_kev=calib["energy_scale_kev"],
        energy_offset_kev=calib["energy_offset_kev"], warnings=tuple(notes), raw=raw,
    )


def unknown_key_notes(raw: dict[str, Any]) -> list[str]:
    """One message per top-level key that mmlake does not know, naming the closest known key."""
    import difflib

    notes = []
    for key in raw:
        if str(key) in KNOWN_KEYS:
            continue
        close = difflib.get_close_matches(str(key).lower(), KNOWN_KEYS, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(KNOWN_KEYS)}"
        notes.append(f"unknown key '{key}' is ignored; {hint}")
    return notes


def _safe_relpath(rel: str, folder: Path, key: str, fail) -> str:
    """Refuse paths that leave the session folder: absolute, '..', or a symlink pointing outside."""
    if os.path.isabs(rel) or rel.startswith("~"):
        raise fail(f"field '{key}' is an absolute path ({rel}); paths must be relative to the session folder")
    parts = Path(rel).parts
    if ".." in parts:
        raise fail(f"field '{key}' ({rel}) escapes the session folder with '..'")
    target = (folder / rel).resolve()
    root = folder.resolve()
    if root not in target.parents and target != root:
        raise fail(f"field '{key}' ({rel}) resolves outside the session folder (a symlink?) to {target}")
    if not target.is_file():
        raise fail(f"field '{key}' names {rel}, which is not a file in the session folder")
    if target.suffix.lower() not in DATA_SUFFIXES:
        raise fail(f"field '{key}' ({rel}): unsupported file type '{target.suffix}'; "
                   f"supported: {', '.join(sorted(DATA_SUFFIXES))}")
    return rel


def content_sha(raw: dict[str, Any], file_shas: dict[str, str]) -> str:
    """A session's content identity: sha256 over the parsed manifest (canonical JSON, so comments,
    key order and whitespace do not count) and the sha256 of every file it names, by role. No path
    enters it: the same bytes copied to another folder are the same content."""
    import hashlib
    import json

    text = json.dumps({"manifest": raw, "files": dict(sorted(file_shas.items()))}, sort_keys=True,
                      default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
