"""Partitions: one key per sample x dose, holding every acquisition (session) of that pair.

Both dimensions are dynamic: ingestion adds keys. The sample key is campaign-qualified
('<campaign key>.<sample>', see mmlake.manifest.make_sample_key), because campaigns reuse sample
names such as `pristine`. Dagster writes the multi-partition key as '<dose>|<sample key>'.
"""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition, MultiPartitionKey, MultiPartitionsDefinition

from mmlake.manifest import Manifest

sample_partitions = DynamicPartitionsDefinition(name="sample")
dose_partitions = DynamicPartitionsDefinition(name="dose")
session_partitions = MultiPartitionsDefinition({"sample": sample_partitions, "dose": dose_partitions})


def partition_key_for(manifest: Manifest) -> MultiPartitionKey:
    return MultiPartitionKey({"sample": manifest.sample_key, "dose": manifest.dose_key})


def as_multi_key(partition_key) -> MultiPartitionKey:
    if isinstance(partition_key, MultiPartitionKey):
        return partition_key
    return session_partitions.get_partition_key_from_str(str(partition_key))


def partition_label(partition_key) -> str:
    """'0.1|demo.pristine' -> 'demo.pristine@0.1' (the pair, for messages and metadata)."""
    keys = as_multi_key(partition_key).keys_by_dimension
    return f"{keys['sample']}@{keys['dose']}"


def add_session_partitions(instance, manifests: list[Manifest]) -> list[MultiPartitionKey]:
    """Register the sample and dose keys of sessions with the Dagster instance (idempotent)."""
    samples = sorted({m.sample_key for m in manifests})
    doses = sorted({m.dose_key for m in manifests})
    instance.add_dynamic_partitions("sample", [s for s in samples if not instance.has_dynamic_partition("sample", s)])
    instance.add_dynamic_partitions("dose", [d for d in doses if not instance.has_dynamic_partition("dose", d)])
    return [partition_key_for(m) for m in manifests]


def partition_tags(partition_key) -> dict[str, str]:
    """Run tags that make a run of a session job materialize one (sample, dose) partition; the
    run queue's per-partition limit (dagster.yaml) keys on `dagster/partition`."""
    key = as_multi_key(partition_key)
    tags = {"dagster/partition": str(key)}
    tags.update({f"dagster/partition/{dim}": k for dim, k in key.keys_by_dimension.items()})
    return tags
