"""The model catalog as the build reads it: ``catalog.toml`` through the contract (the same parser infra uses)."""

from __future__ import annotations

import os
from pathlib import Path

from functions.contract.catalog import CatalogEntry, Gates
from functions.contract.catalog import load_catalog as _load
from functions.contract.errors import CatalogError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = REPO_ROOT / "catalog.toml"

__all__ = ["DEFAULT_CATALOG", "REPO_ROOT", "CatalogEntry", "CatalogError", "Gates", "get_entry", "load_catalog"]


def catalog_path() -> Path:
    """``MAAS_CATALOG``, else the repository's ``catalog.toml``."""
    return Path(os.environ.get("MAAS_CATALOG", DEFAULT_CATALOG))


def load_catalog(path: Path | None = None) -> dict[str, CatalogEntry]:
    """Every entry, typed and checked by the contract's rules (what ``cdk synth`` accepts, and only that)."""
    return _load(path or catalog_path())


def get_entry(name: str, path: Path | None = None) -> CatalogEntry:
    """One entry by name; a :class:`CatalogError` naming the known models otherwise."""
    catalog = load_catalog(path)
    if name not in catalog:
        raise CatalogError(f"model {name!r} is not in the catalog; known: {', '.join(sorted(catalog))}")
    return catalog[name]
