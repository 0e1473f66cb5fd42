"""Tests that read `../shared/data` (real structures, AtomAgined images) skip only where that folder
does not exist at all (a checkout on its own). Where it exists -- the project's machines and CI -- a
missing part is a failure, not a silent skip: tests/conftest.py turns these skips into failures."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SKIP_PREFIX = "shared data missing:"


def needs_shared_data(present: bool, what: str) -> pytest.MarkDecorator:
    """skipif(not present) with a reason conftest recognises."""
    return pytest.mark.skipif(not present, reason=f"{SKIP_PREFIX} {what} (expected under {SHARED_DATA})")
