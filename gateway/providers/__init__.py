"""The built-in provider definitions: data files shipped inside the package."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable


def builtin_files() -> list[Traversable]:
    """The definition files that ship with the gateway, in name order."""
    return sorted(
        (f for f in files(__name__).iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name
    )
