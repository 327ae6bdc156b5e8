"""Configuration errors: the catalog (or a deployment setting) cannot be used as given.

Each message names the model and the key to change. ``maas build`` and ``cdk synth`` raise the same
errors for the same catalog, because both read it through :mod:`functions.contract.catalog`.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Base class: a configuration that cannot be built or deployed as given."""


class CatalogError(ConfigError):
    """``catalog.toml`` is malformed: an unknown key, a wrong type, a value out of range."""


class TimeoutRuleError(CatalogError):
    """A timeout combination that API Gateway (29 s), Lambda (900 s) or SQS (visibility ≥ 6x timeout) breaks."""


class RecursiveTriggerError(CatalogError):
    """An S3 output prefix that could re-trigger a function watching an input prefix."""


class GpuSettingsError(CatalogError):
    """A ``gpu`` target without the settings it needs, or with settings its instance cannot meet."""
