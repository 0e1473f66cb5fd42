"""Reading a lazy (dask-backed) array of a session file into memory, in this process.

Why not dask's default: inside a Dask distributed worker (the `session_job_dask` engine) dask's
default scheduler is the cluster's, so a small read would be shipped to another worker, and two
runs reading identical files (same content: same object path, same dask key) would share one task
on the scheduler; when one run released it the other's read was cancelled ("... cancelled for
reason: unknown", seen in tests/test_engine.py). The reads are local file I/O: the threaded
scheduler of this process is what they need everywhere (outside a worker it is dask's default).

The scheduler is passed as the function (`dask.threaded.get`), not the name "threads": dask resolves
a name by first importing `distributed` to look for a client (~0.1 s of every ingest's start-up).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def materialize(x: Any) -> np.ndarray:
    """`x` as a numpy array; a dask array is computed with this process's threads."""
    if hasattr(x, "compute"):
        from dask.threaded import get

        x = x.compute(scheduler=get)
    return np.asarray(x)


def materialize_all(*xs: Any) -> tuple:
    """Several lazy values computed together (one pass over shared chunks), with this process's threads."""
    import dask
    from dask.threaded import get

    return dask.compute(*xs, scheduler=get)
