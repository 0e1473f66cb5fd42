"""Dagster resources: the lake, the encoder device, the landing zone."""

from resources.lake import LakeResource

__all__ = ["LakeResource"]
