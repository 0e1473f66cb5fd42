"""LakeResource: where the DuckDB file and the object folder live."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from mmlake.lake import Lake


class LakeResource(ConfigurableResource):
    """The mmlake lake. `home` defaults to $MMLAKE_HOME, else ./.mmlake."""

    home: str = Field(default="", description="Lake folder; empty = $MMLAKE_HOME or ./.mmlake")

    def lake(self) -> Lake:
        return Lake(self.home or None)
