"""The Dagster instance of mmlake's own processes (`mmlake ingest`, `mmlake report`, ...).

Why: a 4-chip session's run makes ~350 connections to Dagster's SQLite event log and asks it 120
times whether a sample/dose partition key exists. Dagster's `SqliteEventLogStorage` builds and
disposes a SQLAlchemy engine for every connection and asks SQLite every time; together that was
~0.45 s of a 2.7 s warm ingest (cProfile, A/B over three runs each). `FastSqliteEventLogStorage` is
the same storage (same files, same tables: the UI and the daemon read what it writes with Dagster's
own class) with two changes:

- one engine per shard, kept (still `NullPool`: no connection outlives its transaction, so a forked
  child inherits none);
- `has_dynamic_partition` remembers a "yes" for `DYNAMIC_PARTITION_TTL_S` (a "no" is never
  remembered; a key this process deletes is forgotten at once). A key deleted from the UI while this
  process runs is seen as gone after at most that many seconds.

Only the default SQLite storage is swapped (a dagster.yaml with its own `storage:` is used as it
is), and only in processes that build their instance through `local_instance()`: the webserver, the
daemon and the runs they launch keep Dagster's class.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Any, Iterator

import yaml
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._serdes import ConfigurableClassData
from sqlalchemy.pool import NullPool

DYNAMIC_PARTITION_TTL_S = 10.0
_DEFAULT_STORAGE = ("dagster._core.storage.sqlite_storage", "DagsterSqliteStorage")


class FastSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage with kept engines, a short-lived cache of existing partition keys and
    a cache of completed secondary-index migrations (asked ~18 times a run, 1.7 ms each; a
    migration once completed is never undone, `wipe` aside, which clears the cache)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self._engines: dict[str, Any] = {}
        self._known_keys: dict[tuple[str, str], float] = {}
        self._indexes_done: set[str] = set()
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> "FastSqliteEventLogStorage":
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Any]:
        with self._db_lock:
            engine = self._engines.get(shard)
            if engine is None:
                engine = create_engine(self.conn_string_for_shard(shard), poolclass=NullPool,
                                       connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
                self._engines[shard] = engine
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        key = (partitions_def_name, partition_key)
        seen = self._known_keys.get(key)
        if seen is not None and time.monotonic() - seen < DYNAMIC_PARTITION_TTL_S:
            return True
        found = super().has_dynamic_partition(partitions_def_name, partition_key)
        if found:
            self._known_keys[key] = time.monotonic()
        else:
            self._known_keys.pop(key, None)
        return found

    def has_secondary_index(self, name: str) -> bool:
        if name in self._indexes_done:
            return True
        done = super().has_secondary_index(name)
        if done:
            self._indexes_done.add(name)
        return done

    def wipe(self) -> None:
        self._indexes_done.clear()
        self._known_keys.clear()
        super().wipe()

    def delete_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> None:
        self._known_keys.pop((partitions_def_name, partition_key), None)
        super().delete_dynamic_partition(partitions_def_name, partition_key)

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()
        super().dispose()


def local_instance(home: str | os.PathLike) -> DagsterInstance:
    """The instance configured by `home`/dagster.yaml, with FastSqliteEventLogStorage when it uses
    Dagster's default SQLite storage (the same files DagsterInstance.get() would use)."""
    home = os.fspath(home)
    ref = InstanceRef.from_dir(home)
    sd = ref.storage_data
    if sd is not None and (sd.module_name, sd.class_name) == _DEFAULT_STORAGE:
        base = yaml.safe_load(sd.config_yaml)["base_dir"]
        defaults = InstanceRef.config_defaults(base)
        ref = ref._replace(
            storage_data=None,
            run_storage_data=defaults["run_storage"],
            schedule_storage_data=defaults["schedule_storage"],
            event_storage_data=ConfigurableClassData(  # Dagster's default event-log config, our class
                __name__, FastSqliteEventLogStorage.__name__, defaults["event_log_storage"].config_yaml),
        )
    return DagsterInstance.from_ref(ref)
