"""assets.instance: the CLI's Dagster instance writes the same SQLite files Dagster's own storage
reads (the UI and daemon use Dagster's class), and its partition-key cache never hides a change
for longer than its TTL."""

import shutil
import time
from pathlib import Path

from dagster import DagsterInstance, MultiPartitionKey, asset, materialize

import assets.instance as inst_mod
from assets.instance import FastSqliteEventLogStorage, local_instance
from assets.partitions import session_partitions

REPO = Path(__file__).resolve().parent.parent


@asset(partitions_def=session_partitions)
def probe_asset():
    return 1


def _home(tmp_path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return home


def test_cli_instance_writes_what_dagsters_own_storage_reads(tmp_path):
    home = _home(tmp_path)
    fast = local_instance(home)
    assert type(fast.event_log_storage) is FastSqliteEventLogStorage
    fast.add_dynamic_partitions("sample", ["c.s1"])
    fast.add_dynamic_partitions("dose", ["0"])
    key = MultiPartitionKey({"sample": "c.s1", "dose": "0"})
    assert materialize([probe_asset], partition_key=key, instance=fast).success
    plain = DagsterInstance.from_config(str(home))  # what `dagster dev` / the daemon build
    assert type(plain.event_log_storage).__name__ == "SqliteEventLogStorage"
    assert plain.get_dynamic_partitions("sample") == ["c.s1"]
    ev = plain.get_latest_materialization_event(probe_asset.key)
    assert ev is not None and ev.dagster_event.partition == str(key)
    assert [r.run_id for r in plain.get_runs()] == [r.run_id for r in fast.get_runs()] and len(fast.get_runs()) == 1
    fast.dispose()


def test_partition_key_cache_remembers_yes_for_its_ttl_only(tmp_path, monkeypatch):
    monkeypatch.setattr(inst_mod, "DYNAMIC_PARTITION_TTL_S", 0.5)
    home = _home(tmp_path)
    fast, plain = local_instance(home), DagsterInstance.from_config(str(home))
    assert not fast.has_dynamic_partition("sample", "a")
    plain.add_dynamic_partitions("sample", ["a", "b"])
    assert fast.has_dynamic_partition("sample", "a")  # a "no" was not remembered
    fast.delete_dynamic_partition("sample", "a")  # its own delete: forgotten at once
    assert not fast.has_dynamic_partition("sample", "a")
    assert fast.has_dynamic_partition("sample", "b")
    plain.delete_dynamic_partition("sample", "b")  # another process's delete: seen after the TTL
    assert fast.has_dynamic_partition("sample", "b")
    time.sleep(0.6)
    assert not fast.has_dynamic_partition("sample", "b")


def test_a_dagster_yaml_with_its_own_storage_is_used_as_it_is(tmp_path):
    home = _home(tmp_path)
    base = tmp_path / "elsewhere"
    (home / "dagster.yaml").write_text(
        (home / "dagster.yaml").read_text()
        + f"\nevent_log_storage:\n  module: dagster._core.storage.event_log\n  class: SqliteEventLogStorage\n"
          f"  config:\n    base_dir: {base}\n")
    inst = local_instance(home)
    assert type(inst.event_log_storage).__name__ == "SqliteEventLogStorage"
    assert Path(inst.event_log_storage._base_dir) == base
