"""LakeResource: where the lake's tables (the catalog) and the object folder live."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from mmlake.lake import Lake


class LakeResource(ConfigurableResource):
    """The mmlake lake. `home` defaults to $MMLAKE_HOME, else ./.mmlake; `catalog` to
    $MMLAKE_CATALOG, else what the lake folder recorded, else the single DuckDB file."""

    home: str = Field(default="", description="Lake folder; empty = $MMLAKE_HOME or ./.mmlake")
    catalog: str = Field(default="", description="duckdb | sqlite | sqlite:PATH | postgres:CONNINFO "
                         "(DuckLake; docs/operations.md, 'Catalogs'); empty = $MMLAKE_CATALOG, else the "
                         "folder's record, else the DuckDB file")
    data_path: str = Field(default="", description="DuckLake's Parquet folder; empty = $MMLAKE_DATA_PATH, "
                           "else <lake>/data")

    def lake(self) -> Lake:
        """A Lake for a step: only mmlake's own SQL runs on it (own_sql), so its reads may use the
        write connection the run holds after a commit (mmlake.heldwrite)."""
        return Lake(self.home or None, catalog=self.catalog or None, data_path=self.data_path or None,
                    own_sql=True)
