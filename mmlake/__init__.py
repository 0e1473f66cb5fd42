"""mmlake: a multi-modal materials data lake for STEM HAADF + EDS sessions.

The domain library: plain Python over numpy, torch, HyperSpy and exspy. It never imports Dagster, so
everything here can be called from a notebook.
"""

__version__ = "0.1.0"

import warnings as _warnings

# Warnings nobody using mmlake can act on, silenced here (every process imports mmlake before HyperSpy):
# exspy imports HyperSpy's signal classes from their old module paths, and HyperSpy 2.x answers every
# such import with a VisibleDeprecationWarning ("Importing `LazySignal1D` from `hyperspy._signals...`").
_warnings.filterwarnings("ignore", message=r"Importing `\w+` from `hyperspy\.")
