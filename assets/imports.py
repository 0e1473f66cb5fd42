"""Heavy imports with Python's cyclic garbage collector paused, and what they built frozen.

Why: Dagster, HyperSpy, exspy, scikit-learn and their dependencies leave ~500,000 long-lived objects
in a process, and every full (generation-2) collection walks all of them. A 4-chip `mmlake ingest`
spent 1.0 s of its 7.1 s in the collector: 8 full collections (0.83 s), nearly all of them while
packages were being imported, each walking every object the earlier imports had made
(`python bench/session.py --sessions tiny` prints the collector's time). Module objects,
classes and functions live as long as the process, so collecting them is wasted work.

`collector_paused()` turns the collector off for a block of imports and then `gc.freeze()`s every
object that exists: CPython moves them to a permanent generation that later collections skip
(https://docs.python.org/3/library/gc.html#gc.freeze). Garbage made after the block is collected as
usual. The cost: cycles that became garbage during the block are frozen too and never freed (the
few MB an import leaves, once per process). A process that had the collector off keeps it off.

Only blocks that import packages use it: the code location (assets/definitions.py), the CLI's
start-up, and a step's first import of the readers (HyperSpy/exspy; torch is not covered yet: the
encoders import it only once their weights are known to be there). Freezing inside a
run would also freeze that run's live objects, so `import_paused` does nothing once its modules are
imported.
"""

from __future__ import annotations

import gc
import importlib
import sys
from contextlib import contextmanager
from typing import Iterator

# What reading a session's files imports (HyperSpy's `load`, exspy's EDS signal class): ~1.7 s,
# ~270,000 objects. Steps that open session files import them through `import_paused(*READERS)`.
READERS = ("hyperspy.api", "exspy")


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector off inside the block; every object alive at its end frozen."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def import_paused(*names: str) -> None:
    """Import the modules `names` not imported yet, with the collector paused (see the module
    docstring); nothing at all when every one is imported already."""
    missing = [n for n in names if n not in sys.modules]
    if not missing:
        return
    with collector_paused():
        for name in missing:
            importlib.import_module(name)
