"""Atomic columns and order parameters from HAADF images (placeholder, filled below)."""
