"""LandingResource: the folder microscopes (or people) drop session folders into.

Layout::

    <landing>/                    new session folders arrive here (one folder per session)
    <landing>/processed/          folders the sensor has staged into the lake and requested a run for
    <landing>/rejected/           folders that failed validation, each with a REJECTED.txt saying why
    <lake home>/staged/<session_id>/<manifest sha256>/
                                  the sensor's stable copy that `raw_session` reads (registered in
                                  session_sources), so nothing in the landing zone needs to stay put
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from mmlake.lake import lake_home

PROCESSED = "processed"
REJECTED = "rejected"
RESERVED = {PROCESSED, REJECTED}


class LandingResource(ConfigurableResource):
    """The landing zone. `path` defaults to $MMLAKE_LANDING, else `<lake home>/landing`."""

    path: str = Field(default="", description="Landing folder; empty = $MMLAKE_LANDING or <lake home>/landing")
    lake_home: str = Field(default="", description="Lake folder used for the default path and the staging "
                                                   "area; empty = $MMLAKE_HOME or ./.mmlake")

    def root(self) -> Path:
        path = self.path or os.environ.get("MMLAKE_LANDING") or ""
        return Path(path).resolve() if path else lake_home(self.lake_home or None) / "landing"

    def processed(self) -> Path:
        return self.root() / PROCESSED

    def rejected(self) -> Path:
        return self.root() / REJECTED

    def ensure(self) -> Path:
        """Create the landing folder and its processed/ and rejected/ subfolders."""
        root = self.root()
        for p in (root, self.processed(), self.rejected()):
            p.mkdir(parents=True, exist_ok=True)
        return root
