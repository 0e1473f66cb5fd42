"""The Dagster code location: assembles assets, resources, jobs, sensors and schedules. Nothing else."""

from __future__ import annotations

import os

from assets.imports import READERS, collector_paused

with collector_paused():  # ~0.3 s of full collections while the code location imports (assets/imports.py)
    from dagster import Definitions, define_asset_job, multiprocess_executor

    from assets.atoms import atom_columns, region_order
    from assets.executor import in_process_held_writes_executor
    from assets.crystal import CRYSTAL_ASSETS, CrystalDatasetResource
    from assets.descriptors import campaign_reports, region_descriptors
    from assets.features import eds_features, haadf_embeddings
    from assets.encoders import ssl_encoder
    from assets.ingest import chips, raw_session
    from assets.partitions import session_partitions
    from assets.segmentation import agreement, segmentation
    from resources.encoder import EncoderResource
    from resources.lake import LakeResource
    from resources.landing import LandingResource
    from assets.checks import build_asset_checks
    from assets.scaleout import build_dask_job
    from assets.schedules import JOBS as SCHEDULED_JOBS, SCHEDULES
    from assets.sensors import landing_sensor

SESSION_ASSETS = [raw_session, chips, haadf_embeddings, eds_features, atom_columns, segmentation, agreement,
                  region_descriptors, region_order]

# One partition's chain runs in one process (sensor, schedules, UI launches of session_job): on the
# multiprocess executor each of its 14 steps (11 assets, 3 checks) was a process of its own at ~1.5 s
# of start-up and teardown (bench/landing.py, full-size session, landing folder -> last asset: 34.9 s
# -> 24.9 s).
# Partitions still run side by side: the run queue starts up to 4 runs at once (dagster.yaml), each its
# own process; the `gpu` pool holds in-process steps too. Asset materializations from the UI keep the
# code location's default executor below.
session_job = define_asset_job(
    "session_job", selection=SESSION_ASSETS, partitions_def=session_partitions,
    executor_def=in_process_held_writes_executor,
    description="Everything for one STEM session partition, raw files to descriptors, in one process.",
)
session_job_dask = build_dask_job(SESSION_ASSETS)


def all_resources(lake_home: str | os.PathLike | None = None) -> dict:
    """Resources for the code location; the lake folder defaults to $MMLAKE_HOME / ./.mmlake."""
    return {"lake": LakeResource(home=str(lake_home or "")), "encoder": EncoderResource(),
            "landing": LandingResource(lake_home=str(lake_home or "")), "crystal_dataset": CrystalDatasetResource()}


# Each step of the multiprocess executor is a new process; forkserver with these modules preloaded
# starts steps from a warm parent instead of re-importing Dagster, HyperSpy and exspy every time
# (bench/steps.py, 4 session steps of a tiny session: 33 s -> 17 s with the machine loaded by other
# work, 17.5 s -> 16.5 s idle, where in-process takes 16.6 s: the CLI run itself dominates then).
PRELOAD = ["assets.definitions", *READERS]
executor = multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": PRELOAD}}}, name="multiprocess_forkserver")

crystal_job = define_asset_job("crystal_job", selection=CRYSTAL_ASSETS,
                               description="The crystal campaign on one dataset: structures to benchmark.")

defs = Definitions(
    assets=[*SESSION_ASSETS, campaign_reports, ssl_encoder, *CRYSTAL_ASSETS],
    resources=all_resources(),
    executor=executor,
    jobs=[session_job, session_job_dask, crystal_job, *SCHEDULED_JOBS],
    asset_checks=build_asset_checks(SESSION_ASSETS),
    sensors=[landing_sensor],
    schedules=SCHEDULES,
)
