"""Dagster software-defined assets over the mmlake library. `assets.definitions.defs` assembles them."""
