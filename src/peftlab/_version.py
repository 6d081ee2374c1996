"""The package version, in a module of its own so that any peftlab module can import it at the top without
importing the package's ``__init__`` (which imports nearly everything)."""
from __future__ import annotations

__version__ = "0.1.0"
