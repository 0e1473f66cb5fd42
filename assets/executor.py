"""The session job's executor: Dagster's in-process executor, with the lake's write connection kept
between steps.

Why: a partition's steps run back to back in one process, and each opened the DuckDB file twice
(its input reads, its write: ~20 ms each, plus a checkpoint at every close). Inside
`mmlake.heldwrite.holding()` the write connection stays open across the steps' accesses until it
has been idle for `MMLAKE_HOLD_IDLE_S` (mmlake/heldwrite.py says what this costs other processes:
the file stays locked while steps follow each other faster than that). Everything else is the
in-process executor's (config: `execution: config: retries: ...`).
"""

from __future__ import annotations

from dagster import Executor, executor, in_process_executor

from mmlake import heldwrite


class HeldWritesExecutor(Executor):
    """Delegates to an in-process executor; its steps run inside `heldwrite.holding()`."""

    def __init__(self, inner: Executor):
        self._inner = inner

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan):
        with heldwrite.holding():
            yield from self._inner.execute(plan_context, execution_plan)


@executor(name="in_process", config_schema=in_process_executor.config_schema)
def in_process_held_writes_executor(init_context):
    """Dagster's in-process executor, the lake's write connection kept between steps (module docstring)."""
    return HeldWritesExecutor(in_process_executor.executor_creation_fn(init_context))
