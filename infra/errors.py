"""Errors raised while turning the catalog and manifests into a deployable configuration.

Catalog errors are the contract's own (``functions.contract.errors``: ``maas build`` raises the same
ones); the rest concern a deployment. Every error names the model and the setting to change, so
``cdk synth`` fails with a message that says what to fix rather than with a CloudFormation rollback
twenty minutes later.
"""

from __future__ import annotations

from functions.contract.errors import (
    CatalogError,
    ConfigError,
    GpuSettingsError,
    RecursiveTriggerError,
    TimeoutRuleError,
)

InfraConfigError = ConfigError  # base class of every configuration error synth raises

__all__ = [
    "CatalogError",
    "EnvironmentConfigError",
    "GpuSettingsError",
    "InfraConfigError",
    "MissingArtifactError",
    "PackageTooLargeError",
    "RecursiveTriggerError",
    "TimeoutRuleError",
]


class EnvironmentConfigError(ConfigError):
    """Stage, account, region, tiers or tenants from context / config file are invalid or missing."""


class MissingArtifactError(ConfigError):
    """A catalog model has no built artifact (``artifacts/<name>/manifest.json``) to deploy."""


class PackageTooLargeError(ConfigError):
    """Runtime + model exceed what the chosen Lambda package type can hold."""
