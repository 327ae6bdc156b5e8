"""Errors raised while turning the catalog and manifests into a deployable configuration.

Every error names the model and the setting to change, so ``cdk synth`` fails with a message that
says what to fix rather than with a CloudFormation rollback twenty minutes later.
"""

from __future__ import annotations


class InfraConfigError(ValueError):
    """Base class: the catalog, a manifest or the environment settings cannot be deployed as given."""


class CatalogError(InfraConfigError):
    """``catalog.toml`` is malformed: an unknown key, a wrong type, a value out of range."""


class EnvironmentConfigError(InfraConfigError):
    """Stage, account, region, tiers or tenants from context / config file are invalid or missing."""


class MissingArtifactError(InfraConfigError):
    """A catalog model has no built artifact (``artifacts/<name>/manifest.json``) to deploy."""


class PackageTooLargeError(InfraConfigError):
    """Runtime + model exceed what the chosen Lambda package type can hold."""


class TimeoutRuleError(InfraConfigError):
    """A timeout combination that API Gateway (29 s) or SQS (visibility ≥ 6x timeout) would break."""


class RecursiveTriggerError(InfraConfigError):
    """An S3 output prefix that could re-trigger a function watching an input prefix."""


class GpuSettingsError(InfraConfigError):
    """A ``gpu`` target without the settings it needs, or with settings its instance cannot meet."""
