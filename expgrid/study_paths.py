"""Where a study named on the command line or in ``expgrid.run`` is: a path as given, or the name
of a study shipped in ``search_spaces/``. Kept apart from the CLI so that the Python API finds
studies the same way without loading the command line."""

from __future__ import annotations

from pathlib import Path


def resolve_study_path(name: str) -> str:
    """A path as given, or the name of a study shipped in search_spaces/ (with or without .yaml)."""
    path = Path(name)
    try:
        if path.exists() or path.suffix in (".yaml", ".yml") and path.parent != Path("."):
            return str(path)
    except OSError:  # e.g. a name too long to be a path: loading it names the error
        return str(path)
    import search_spaces

    shipped = Path(search_spaces.__file__).parent / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    try:
        return str(shipped) if shipped.exists() else str(path)
    except OSError:
        return str(path)
