"""mmlake: a multi-modal materials data lake for STEM HAADF + EDS sessions.

The domain library: plain Python over numpy, torch, HyperSpy and exspy. It never imports Dagster, so
everything here can be called from a notebook.
"""

__version__ = "0.1.0"
