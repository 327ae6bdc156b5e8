"""The CDK app: ``cdk synth`` / ``cdk deploy`` run ``python -m infra.app`` (see cdk.json).

Stacks, for stage ``<s>``: ``maas-<s>-shared``, one ``maas-<s>-model-<name>`` per catalog model, and
``maas-<s>-api`` (the API stage, deployed last). cdk-nag's AwsSolutions pack runs on every synth as a
CDK validation plugin; any unacknowledged finding fails the synth (``-c nag=false`` turns it off).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from functions.contract.catalog import CatalogEntry, load_catalog
from infra.config import ModelSpec, load_models
from infra.errors import EnvironmentConfigError
from infra.packaging import runtime_bytes_by_arch
from infra.settings import REPO_ROOT, EnvironmentConfig, load_environment
from infra.stacks.api import ApiStack
from infra.stacks.model import ModelStack
from infra.stacks.shared import SharedStack


def model_stack_name(settings: EnvironmentConfig, spec: ModelSpec) -> str:
    """``maas-<stage>-model-<name>``: the ``model-`` part keeps a model called "api" from clashing."""
    return f"{settings.prefix}-model-{spec.name}"


def stage_models(catalog: Mapping[str, CatalogEntry], settings: EnvironmentConfig) -> dict[str, CatalogEntry]:
    """The catalog entries this stage deploys (its ``models`` setting; every entry when it names none)."""
    if not settings.models:
        return dict(catalog)
    unknown = sorted(set(settings.models) - set(catalog))
    if unknown:
        raise EnvironmentConfigError(
            f"stage {settings.stage!r} deploys {', '.join(unknown)}, which the catalog does not have; "
            f"catalog models: {', '.join(catalog)}"
        )
    return {name: entry for name, entry in catalog.items() if name in settings.models}


def cdk_json_context() -> dict[str, Any]:
    """The ``context`` block of the repo's cdk.json (feature flags and default settings)."""
    path = REPO_ROOT / "cdk.json"
    context = json.loads(path.read_text(encoding="utf-8")).get("context", {}) if path.is_file() else {}
    return dict(context)


def build_app(
    context: Mapping[str, Any] | None = None,
    *,
    outdir: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> cdk.App:
    """Build the whole app from CDK context (+ optional stage config file) and the catalog.

    Raises an :class:`infra.errors.InfraConfigError` subclass, with a message saying what to change,
    for any configuration the guards refuse.
    """
    # cdk.json's context (feature flags, default config file) is the base, so `python -m infra.app` and
    # tests synthesize exactly what the CLI does; the CLI's own context (cdk.json + -c) still wins.
    app = cdk.App(context={**cdk_json_context(), **(context or {})}, outdir=outdir)
    settings = load_environment(app.node.try_get_context, os.environ if environ is None else environ)
    models = load_models(
        stage_models(load_catalog(settings.catalog), settings),
        artifacts_dir=settings.artifacts_dir,
        allow_missing_artifacts=settings.allow_missing_artifacts,
        runtime_bytes=runtime_bytes_by_arch(settings),
        api_timeout_quota_s=settings.api_timeout_quota_s,
    )
    env = cdk.Environment(account=settings.account, region=settings.region)
    # The VPC checks its zones against the stack's; answer that lookup from settings so synth never
    # calls AWS (a cdk.context.json entry, if any, still wins).
    az_key = f"availability-zones:account={settings.account}:region={settings.region}"
    if app.node.try_get_context(az_key) is None:
        app.node.set_context(az_key, list(settings.availability_zones))
    shared = SharedStack(
        app,
        f"{settings.prefix}-shared",
        settings=settings,
        models=models,
        env=env,
        description=f"maas {settings.stage}: data key, buckets, REST API definition, network, shared alarms",
    )
    model_stacks = [
        ModelStack(
            app,
            model_stack_name(settings, spec),
            spec=spec,
            settings=settings,
            shared=shared,
            env=env,
            description=f"maas {settings.stage}: model {spec.name} ({spec.task}, {spec.target})",
        )
        for spec in models
    ]
    api = ApiStack(
        app,
        f"{settings.prefix}-api",
        settings=settings,
        shared=shared,
        models=models,
        env=env,
        description=f"maas {settings.stage}: API stage, WAF, usage plans and keys",
    )
    for stack in model_stacks:
        api.add_stack_dependency(stack, "the stage deploys the methods the model stacks add")
    cdk.Tags.of(app).add("project", "maas")
    cdk.Tags.of(app).add("stage", settings.stage)
    if str(app.node.try_get_context("nag")).lower() != "false":
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def main() -> None:
    """Entry point used by ``cdk.json``."""
    build_app().synth()


if __name__ == "__main__":
    main()
