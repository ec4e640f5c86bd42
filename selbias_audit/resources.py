"""Locations of the data files that ship with the package: templates and JSON schemas.

In a source checkout they live in the repository's top-level ``templates/`` and
``schemas/`` folders. An installed wheel carries them inside the package as
``selbias_audit/_templates`` and ``selbias_audit/_schemas``, so that location is tried
first.
"""

from __future__ import annotations

from pathlib import Path

from selbias_audit.errors import RunError

_PACKAGE_DIR = Path(__file__).resolve().parent


def _data_dir(installed_name: str, source_name: str) -> Path:
    """Return the installed data folder, else the one in the source checkout."""
    candidates = (_PACKAGE_DIR / installed_name, _PACKAGE_DIR.parent / source_name)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(path) for path in candidates)
    raise RunError(
        f"data folder {source_name!r} not found (tried {tried})",
        hint="reinstall selbias-audit, or run it from a complete source checkout",
    )


def template_dir() -> Path:
    """Return the folder that contains the receipt templates and stylesheet.

    Raises
    ------
    RunError
        If neither the installed nor the source-tree folder exists.
    """
    return _data_dir("_templates", "templates")


def schema_dir() -> Path:
    """Return the folder that contains the generated JSON schemas.

    Raises
    ------
    RunError
        If neither the installed nor the source-tree folder exists.
    """
    return _data_dir("_schemas", "schemas")
