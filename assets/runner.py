"""Running the session assets from Python or the CLI, against the same Dagster instance the UI uses.

`ingest` registers session folders, adds their partition keys to the instance and materializes each
partition in its own run (so the runs, logs and lineage show up in `make ui`). One failing session
fails only its own run; the others go on.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from dagster import DagsterEventType, DagsterInstance, materialize

from assets.partitions import add_session_partitions
from mmlake.errors import MmlakeError
from mmlake.lake import Lake
from mmlake.manifest import MANIFEST_NAME
from mmlake.store import register_source

MMLAKE_ERRORS = {"SessionError", "LakeError", "MmlakeError", "ValueError"}
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class IngestOutcome:
    folder: str
    session_id: str | None
    ok: bool
    message: str = ""


def dagster_instance() -> DagsterInstance:
    """The persistent instance under $DAGSTER_HOME (default ./.dagster_home, with our dagster.yaml)."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        shutil.copy(REPO_ROOT / "dagster.yaml", cfg)
    return DagsterInstance.get()


def session_folders(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Each path is a session folder, or a folder of session folders."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / MANIFEST_NAME).is_file():
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(d for d in p.iterdir() if (d / MANIFEST_NAME).is_file()))
        else:
            out.append(p)  # reported as an error below
    return out


def step_error(result) -> str:
    """The first step failure's message of a run result."""
    for ev in result.all_events:
        if ev.event_type == DagsterEventType.STEP_FAILURE:
            err = ev.event_specific_data.error
            chain = [err]
            while chain[-1].cause is not None:
                chain.append(chain[-1].cause)
            # our own errors say what to do; otherwise the root cause is the most telling
            err = next((e for e in chain if e.cls_name in MMLAKE_ERRORS), chain[-1])
            return f"{ev.step_key}: {err.message.strip()}"
    return "run failed"


def ingest(
    paths: Iterable[str | os.PathLike],
    lake: Lake,
    instance: DagsterInstance | None = None,
    progress: Callable[[str], None] = print,
    log_level: str = "INFO",
) -> list[IngestOutcome]:
    """Register session folders and materialize every session asset for their partitions.

    `log_level` INFO shows the assets' own progress lines; DEBUG adds every Dagster event.
    """
    from assets.definitions import SESSION_ASSETS, all_resources

    instance = instance or dagster_instance()
    outcomes, manifests = [], []
    for folder in session_folders(paths):
        try:
            manifests.append((folder, register_source(lake, folder)))
        except MmlakeError as exc:
            outcomes.append(IngestOutcome(str(folder), None, False, str(exc)))
            progress(f"REJECTED {folder}: {exc}")
    keys = add_session_partitions(instance, [m for _, m in manifests])
    resources = all_resources(lake.home)
    for (folder, m), key in zip(manifests, keys):
        progress(f"materializing {m.session_id} ({len(SESSION_ASSETS)} assets) ...")
        result = materialize(SESSION_ASSETS, partition_key=key, instance=instance, resources=resources,
                             raise_on_error=False, tags={"mmlake/session": m.session_id},
                             run_config={"loggers": {"console": {"config": {"log_level": log_level}}}})
        msg = "ok" if result.success else step_error(result)
        outcomes.append(IngestOutcome(str(folder), m.session_id, result.success, msg))
        progress(f"{'done' if result.success else 'FAILED'} {m.session_id}: {msg}")
    return outcomes


def run_crystal(lake: Lake, instance: DagsterInstance | None = None, path: str | None = None,
                name: str | None = None, reference_only: bool = False, epochs: int = 100) -> bool:
    """Materialize the crystal group on a dataset (all of it, or just structures + reference spacings)."""
    from assets.crystal import CRYSTAL_ASSETS, CrystalDatasetResource, crystal_reference_spacings, structures
    from assets.definitions import all_resources

    selection = [structures, crystal_reference_spacings] if reference_only else CRYSTAL_ASSETS
    resources = {**all_resources(lake.home),
                 "crystal_dataset": CrystalDatasetResource(path=path or "", name=name or "", epochs=epochs)}
    result = materialize(CRYSTAL_ASSETS, selection=selection, instance=instance or dagster_instance(),
                         resources=resources, raise_on_error=False,
                         run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}})
    if not result.success:
        print(f"FAILED crystal group: {step_error(result)}")
    return result.success


def run_reports(lake: Lake, instance: DagsterInstance | None = None) -> bool:
    """Materialize `campaign_reports` (one HTML report per campaign) through Dagster."""
    from assets.definitions import SESSION_ASSETS, all_resources
    from assets.descriptors import campaign_reports

    result = materialize([*SESSION_ASSETS, campaign_reports], selection=[campaign_reports],
                         instance=instance or dagster_instance(), resources=all_resources(lake.home),
                         raise_on_error=False,
                         run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    if not result.success:
        print(f"FAILED campaign_reports: {step_error(result)}")
    return result.success
