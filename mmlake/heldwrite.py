"""A write connection kept open after its commit, for the same process's next access to the lake.

Why: every open of the DuckDB file makes a new database instance and reads the catalog (~20 ms),
and every close of a write connection checkpoints (~25 ms). A partition's steps run back to back
in one process: step N's write, Dagster's bookkeeping (~20 ms), step N+1's reads of its inputs,
its computation, its write. Keeping step N's write connection for step N+1's reads saves one open
per step, and consecutive writes (the three segmentation methods) share one open and one
checkpoint: ~0.3 s of a 4-chip ingest's ~2.3 s outside imports.

The cost is the file lock: while a connection is held no other process can open the lake (they
wait, lake.connect retries). So a connection is only held
- inside `holding()`, which a run of a partition's steps in one process opens around them (the
  session job's executor, assets/executor.py; `mmlake ingest`'s in-process runs, assets/runner.py)
  and nothing else;
- from a commit to the next access of this process, which takes it: a read closes it when the
  reads are done (before any computation starts), a write keeps it again after its commit;
- never across a failed transaction, and never in a forked child (the pid is checked).
Reads served by a held write connection are the lake's own SQL (Lake(own_sql=True), the Dagster
steps): they are not hardened (mmlake.sqlguard), which only user SQL needs.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator

_lock = threading.Lock()
_scopes: dict[str, int] = {}  # path (ALL: every lake) -> open `holding` blocks
ALL = "*"
_held: dict[str, tuple[int, Any]] = {}  # path -> (pid, open write connection)


@contextmanager
def holding(path: str = ALL) -> Iterator[None]:
    """Inside, write connections to `path` (default: any lake this process opens) are kept after their
    commit (see the module docstring); what is held when the last block ends is closed (its
    checkpoint runs then)."""
    with _lock:
        _scopes[path] = _scopes.get(path, 0) + 1
    try:
        yield
    finally:
        with _lock:
            _scopes[path] -= 1
            if not _scopes[path]:
                del _scopes[path]
            done = [p for p, (pid, _) in _held.items()
                    if pid == os.getpid() and not _scopes.get(p) and not _scopes.get(ALL)]
            cons = [_held.pop(p)[1] for p in done]
        for con in cons:
            con.close()


def take(path: str) -> Any | None:
    """The write connection held for `path` (now the caller's to use and close or offer back), or None.
    A forked child never touches its parent's connection (not even to drop it: closing it would
    checkpoint a file the parent still writes)."""
    with _lock:
        pid, con = _held.get(path, (None, None))
        if pid != os.getpid():
            return None
        del _held[path]
    return con


def offer(path: str, con: Any) -> bool:
    """Keep `con` (a write connection whose transaction has ended) for this process's next access;
    False when no `holding` block is open for `path` (the caller closes it)."""
    with _lock:
        if not (_scopes.get(path) or _scopes.get(ALL)) or path in _held:
            return False
        _held[path] = (os.getpid(), con)
        return True

