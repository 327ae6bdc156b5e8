"""GIVEN one table of catalog entries, valid and invalid WHEN ``maas`` (the build's catalog reader, as a user
runs it) and ``cdk synth`` (the app builder) read each THEN both accept the same entries and refuse the same
ones, with the same error, because both read the catalog through the contract.

Rules that need a deployment (the stage's API Gateway quota, the built artifact's size) are synth's alone
and are not in this table; ``test_guards.py`` covers them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from typer.testing import CliRunner

from functions.contract.errors import (
    CatalogError,
    ConfigError,
    GpuSettingsError,
    RecursiveTriggerError,
    TimeoutRuleError,
)
from tests.infra.conftest import gpu_entry, lambda_entry, write_catalog

Build = Callable[..., cdk.App]
EMBED = {"task": "sentence-embeddings", "source": "pkg.module:load"}

# name → (the [models] table, the error both must raise, or None when both must accept it)
TABLE: dict[str, tuple[Mapping[str, Mapping[str, Any]], type[ConfigError] | None]] = {
    "no deploy table: a Lambda with defaults": ({"m": EMBED}, None),
    "deploy table without a target: Lambda": ({"m": {**EMBED, "deploy": {"memory_mb": 3008}}}, None),
    "a full lambda entry": ({"m": lambda_entry(architecture="x86_64", reserved_concurrency=5)}, None),
    "a gpu entry": ({"g": gpu_entry()}, None),
    "two models, each its own prefixes": ({"a": lambda_entry(), "b": lambda_entry(openai_route=False)}, None),
    "unknown top-level key": ({"m": {**EMBED, "sauce": "x"}}, CatalogError),
    "unknown deploy key": ({"m": lambda_entry(memroy_mb=1024)}, CatalogError),
    "string where an integer belongs": ({"m": lambda_entry(memory_mb="2048")}, CatalogError),
    "unknown target": ({"m": lambda_entry(target="k8s")}, CatalogError),
    "unknown task": ({"m": {**EMBED, "task": "summarization"}}, CatalogError),
    "unknown quantization preset": ({"m": {**EMBED, "quantization": "int3"}}, CatalogError),
    "limits out of range": ({"m": {**EMBED, "limits": {"max_batch": 0}}}, CatalogError),
    "unknown gate": ({"m": {**EMBED, "gates": {"vibes": 1.0}}}, CatalogError),
    "gpu without its sizing": ({"g": gpu_entry(instance_type=None, min_tasks=None)}, GpuSettingsError),
    "gpu on a CPU instance": ({"g": gpu_entry(instance_type="m5.xlarge")}, GpuSettingsError),
    "gpu min above max": ({"g": gpu_entry(min_tasks=3, max_tasks=2)}, GpuSettingsError),
    "request timeout past API Gateway's": ({"m": lambda_entry(timeout_s=40, api_timeout_s=29)}, TimeoutRuleError),
    "batch timeout under the request's": ({"m": lambda_entry(batch_timeout_s=5)}, TimeoutRuleError),
    "memory under Lambda's minimum": ({"m": lambda_entry(memory_mb=64)}, CatalogError),
    "reply queue that is not an ARN": ({"m": lambda_entry(reply_queue_arns=["https://sqs/q"])}, CatalogError),
    "outputs inside its own inputs": ({"m": lambda_entry(output_prefix="inputs/m/out/")}, RecursiveTriggerError),
    "two models owning /v1/embeddings": (
        {"a": lambda_entry(openai_route=True), "b": lambda_entry(openai_route=True)},
        CatalogError,
    ),
}


def _build_verdict(catalog: Path) -> tuple[int, str]:
    """What ``maas list`` says of the catalog (the same reader ``maas build`` uses before building)."""
    from maas_dev.cli import main

    runner = CliRunner()
    result = runner.invoke(_as_typer(main), [], env={"MAAS_CATALOG": str(catalog), "COLUMNS": "400"})
    return result.exit_code, result.output


def _as_typer(main: Callable[[], None]) -> Any:
    """``maas list`` through the CLI's own entry point (``main`` maps configuration errors to exit 2)."""
    import typer

    shim = typer.Typer()

    @shim.command()
    def run() -> None:
        import sys

        sys.argv = ["maas", "list"]
        try:
            main()
        except SystemExit as exc:
            raise typer.Exit(int(exc.code or 0)) from None

    return shim


@pytest.mark.parametrize("case", list(TABLE), ids=list(TABLE))
def test_maas_build_and_cdk_synth_accept_and_refuse_the_same_entries(
    case: str, build: Build, tmp_path: Path
) -> None:
    models, expected = TABLE[case]
    catalog = write_catalog(tmp_path / "parity.toml", models)
    exit_code, output = _build_verdict(catalog)

    synth_error: ConfigError | None = None
    try:
        build(models, allowMissingArtifacts="true", manifests=dict.fromkeys(models, -1))
    except ConfigError as exc:
        synth_error = exc

    if expected is None:
        assert exit_code == 0, output
        assert synth_error is None, synth_error
        assert all(name in output for name in models)
    else:
        assert isinstance(synth_error, expected), synth_error
        assert exit_code == 2, output
        # the same words in both: the build prints the message synth raises
        assert " ".join(str(synth_error).split()) in " ".join(output.split())
