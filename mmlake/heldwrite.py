"""A write connection kept open after its commit, for the same process's next accesses to the lake.

Why: every open of the DuckDB file makes a new database instance and reads the catalog (~20 ms),
and every close of a write connection checkpoints (~15-25 ms). A partition's steps run back to back
in one process: step N's write, Dagster's bookkeeping (~50 ms), step N+1's reads of its inputs,
its computation, its write. Keeping the connection from step N's write through step N+1's reads and
write saves an open and a checkpoint per step: ~0.3 s of a 4-chip ingest's ~2 s outside imports.

The cost is the file lock: while a connection is held no other process can open the lake (they
wait, lake.connect retries). So a connection is only held
- inside `holding()`, which a run of a partition's steps in one process opens around them (the
  session job's executor, assets/executor.py; `mmlake ingest`, assets/runner.py) and nothing else;
- from an access of this process's own SQL to its next one, and at most `IDLE_S` seconds
  (`MMLAKE_HOLD_IDLE_S`, default 0.5) after the last: a background thread closes a connection idle
  that long, so a computation longer than that (a full-size session's chip sums, embeddings,
  descriptors) runs with the file free. `IDLE_S` 0: a read lets it go at once (only a write keeps it,
  until the next access);
- never across a failed transaction, and never in a forked child (the pid is checked).
Reads served by a held write connection are the lake's own SQL (Lake(own_sql=True), the Dagster
steps): they are not hardened (mmlake.sqlguard), which only user SQL needs.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator


def _idle_from_env() -> float:
    raw = os.environ.get("MMLAKE_HOLD_IDLE_S", "0.5")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise ValueError(f"MMLAKE_HOLD_IDLE_S must be a number of seconds >= 0 (default 0.5), got {raw!r}")
    return value


IDLE_S = _idle_from_env()
ALL = "*"
_lock = threading.Lock()
_wake = threading.Condition(_lock)  # the reaper waits on it for the next deadline or a new offer
_scopes: dict[str, int] = {}  # path (ALL: every lake) -> open `holding` blocks
_held: dict[str, tuple[int, Any, float]] = {}  # path -> (pid, open write connection, idle deadline)
_reaper: list[int] = []  # pid of the process whose reaper thread runs (a forked child starts its own)


def _after_fork_in_child() -> None:
    """A child forked while another thread held the lock would wait on it forever: new ones. The
    parent's connections stay in `_held` (dropping them would close them: a checkpoint of a file the
    parent still writes); their pid keeps the child off them."""
    global _lock, _wake
    _lock = threading.Lock()
    _wake = threading.Condition(_lock)
    _reaper.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def holding(path: str = ALL) -> Iterator[None]:
    """Inside, write connections to `path` (default: any lake this process opens) are kept between
    this process's accesses (see the module docstring); what is held when the last block ends is
    closed (its checkpoint runs then)."""
    with _lock:
        _scopes[path] = _scopes.get(path, 0) + 1
    try:
        yield
    finally:
        with _lock:
            _scopes[path] -= 1
            if not _scopes[path]:
                del _scopes[path]
            done = [p for p, (pid, _, _) in _held.items()
                    if pid == os.getpid() and not _scopes.get(p) and not _scopes.get(ALL)]
            for p in done:
                _held.pop(p)[1].close()


def take(path: str) -> Any | None:
    """The write connection held for `path` (now the caller's to use and close or offer back), or None.
    A forked child never touches its parent's connection (not even to drop it: closing it would
    checkpoint a file the parent still writes)."""
    with _lock:  # waits for a close the reaper has begun: the caller's new open finds the file free
        pid, con, _ = _held.get(path, (None, None, None))
        if pid != os.getpid():
            return None
        del _held[path]
    return con


def offer(path: str, con: Any, *, after_read: bool = False) -> bool:
    """Keep `con` (a write connection whose transaction has ended) for this process's next access,
    for at most IDLE_S seconds; False when no `holding` block is open for `path`, or `after_read`
    and IDLE_S is 0 (the caller closes it)."""
    with _lock:
        if not (_scopes.get(path) or _scopes.get(ALL)) or path in _held or (after_read and IDLE_S <= 0):
            return False
        # after a write with IDLE_S 0: kept until the next access, as reads then let it go
        deadline = time.monotonic() + IDLE_S if IDLE_S > 0 else float("inf")
        _held[path] = (os.getpid(), con, deadline)
        if os.getpid() not in _reaper:
            _reaper[:] = [os.getpid()]
            threading.Thread(target=_reap, name="mmlake-heldwrite-reaper", daemon=True).start()
        _wake.notify()
        return True


def _reap() -> None:
    """Close this process's held connections once idle for IDLE_S (under the lock, so a `take` that
    comes during the checkpoint waits for it and then opens the file afresh)."""
    with _wake:
        while True:
            now = time.monotonic()
            mine = {p: d for p, (pid, _, d) in _held.items() if pid == os.getpid()}
            for p, d in mine.items():
                if d <= now:
                    _held.pop(p)[1].close()
            later = [d for d in mine.values() if now < d < float("inf")]  # inf: kept until taken
            _wake.wait(timeout=min(later) - now if later else None)
