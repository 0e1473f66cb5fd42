"""Reconstructable job targets for `dagster.reconstructable` (Dask workers and test runs import the
job from the code location through these). They live apart from assets/scaleout.py so that
assets/definitions.py imports scaleout without scaleout importing definitions back (no cycle)."""

from __future__ import annotations

from assets.scaleout import DASK_JOB_NAME


def dask_job_def():
    """`session_job_dask` from the code location."""
    from assets.definitions import defs

    return defs.resolve_job_def(DASK_JOB_NAME)


def session_job_def():
    """The default-executor `session_job`, to compare against."""
    from assets.definitions import defs

    return defs.resolve_job_def("session_job")
