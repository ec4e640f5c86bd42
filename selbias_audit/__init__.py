"""selbias-audit: audit the selection stage of recursive synthetic-data pipelines."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
