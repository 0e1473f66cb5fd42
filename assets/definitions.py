"""The Dagster code location: assembles assets, resources, jobs, sensors and schedules. Nothing else."""

from __future__ import annotations

import os

from dagster import Definitions, define_asset_job

from assets.ingest import chips, raw_session
from assets.partitions import session_partitions
from resources.lake import LakeResource

SESSION_ASSETS = [raw_session, chips]

session_job = define_asset_job(
    "session_job", selection=SESSION_ASSETS, partitions_def=session_partitions,
    description="Everything for one STEM session partition, raw files to descriptors.",
)


def all_resources(lake_home: str | os.PathLike | None = None) -> dict:
    """Resources for the code location; the lake folder defaults to $MMLAKE_HOME / ./.mmlake."""
    return {"lake": LakeResource(home=str(lake_home or ""))}


defs = Definitions(
    assets=SESSION_ASSETS,
    resources=all_resources(),
    jobs=[session_job],
)
