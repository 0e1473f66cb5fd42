"""Partitions: one STEM session = one (sample, dose) key. Both dimensions are dynamic: ingestion adds keys."""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition, MultiPartitionKey, MultiPartitionsDefinition

from mmlake.manifest import Manifest

sample_partitions = DynamicPartitionsDefinition(name="sample")
dose_partitions = DynamicPartitionsDefinition(name="dose")
session_partitions = MultiPartitionsDefinition({"sample": sample_partitions, "dose": dose_partitions})


def partition_key_for(manifest: Manifest) -> MultiPartitionKey:
    return MultiPartitionKey({"sample": manifest.sample, "dose": manifest.dose_key})


def session_id_of(partition_key) -> str:
    """'0.1|pristine' (Dagster's multi-partition key) -> 'pristine@0.1'."""
    keys = partition_key.keys_by_dimension
    return f"{keys['sample']}@{keys['dose']}"


def add_session_partitions(instance, manifests: list[Manifest]) -> list[MultiPartitionKey]:
    """Register the sample and dose keys of sessions with the Dagster instance (idempotent)."""
    samples = sorted({m.sample for m in manifests})
    doses = sorted({m.dose_key for m in manifests})
    instance.add_dynamic_partitions("sample", [s for s in samples if not instance.has_dynamic_partition("sample", s)])
    instance.add_dynamic_partitions("dose", [d for d in doses if not instance.has_dynamic_partition("dose", d)])
    return [partition_key_for(m) for m in manifests]
