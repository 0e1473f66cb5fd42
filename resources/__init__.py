"""Dagster resources: the lake, the encoder device, the landing zone."""

from resources.encoder import EncoderResource
from resources.lake import LakeResource
from resources.landing import LandingResource

__all__ = ["EncoderResource", "LakeResource", "LandingResource"]
