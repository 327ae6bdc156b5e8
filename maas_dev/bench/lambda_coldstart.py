"""`maas bench <model> --lambda-cold-start`: the cold start of the deployed zip, measured as Lambda runs it.

The model's zip is staged exactly as `cdk deploy` ships it (strict packaging: the locked dependencies built by
`infra.build_deps` for this machine's architecture, the runtime and the model, all precompiled by Lambda's
Python), zipped and unzipped, and run from a read-only /var/task by CPython 3.13 with ``-I -S`` as an
unprivileged user (:mod:`maas_dev.lambda_bundle`): each round is a new process that imports the handler (the
init phase) and answers one real API Gateway event. Rounds alternate with the same model loaded from the
development virtualenv, the figure earlier reports gave, so the two are measured under the same load.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from maas_dev.bench.common import run_header
from maas_dev.bench.report import write_json

INIT_TARGET_S = 1.0
FIRST_RESPONSE_TARGET_S = 1.2
SIZE_TARGET_MB = 200.0
EVENTS = {
    "sentence-embeddings": "apigw_v1_predict_embed.json",
    "text-classification": "apigw_v2_oip_infer_intent.json",
}


def host_architecture() -> str:
    return {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]


def stage_bundle(name: str, work: Path, console: Console) -> tuple[Path, float, str]:
    """The model's zip for this machine's architecture, unzipped: (task root, unzipped MiB, architecture)."""
    from functions.contract.catalog import load_catalog
    from infra import build_deps, packaging
    from infra.config import load_models
    from infra.settings import REPO_ROOT, load_environment
    from maas_dev.lambda_bundle import unzip_asset

    arch = host_architecture()
    deps = REPO_ROOT / "build" / "lambda-deps"
    try:
        for extra in (None, *packaging.extras_for(load_catalog(REPO_ROOT / "catalog.toml")[name].task)):
            packaging.check_deps_current(packaging.deps_dir(deps, arch, extra), packaging.deps_stamp(deps, arch, extra))
    except packaging.PackagingError:
        console.log(f"building the Lambda dependencies for {arch} (python -m infra.build_deps --arch {arch})")
        build_deps.main(["--arch", arch])
    context = {"account": "123456789012", "region": "eu-west-1", "packaging": "strict", "stagingDir": str(work / "s")}
    settings = load_environment(context.get, {})
    entry = load_catalog(REPO_ROOT / "catalog.toml")[name]
    entry = entry.model_copy(update={"deploy": entry.deploy.model_copy(update={"architecture": arch})})
    (spec,) = load_models(
        {name: entry},
        artifacts_dir=settings.artifacts_dir,
        allow_missing_artifacts=False,
        runtime_bytes=packaging.runtime_bytes_by_arch(settings),
        api_timeout_quota_s=settings.api_timeout_quota_s,
    )
    staged = packaging.stage_lambda_zip(spec, settings, architecture=arch)
    return unzip_asset(staged, work / "task"), packaging.dir_size(staged) / 2**20, arch


def run_lambda_cold_start(name: str, *, rounds: int, out_dir: Path, console: Console) -> Path:
    """Alternate ``rounds`` cold starts of the deployed zip and of the virtualenv; write the report."""
    import boto3

    from functions.contract.catalog import load_catalog
    from functions.contract.deployment import RuntimeEnvironment, service_name
    from infra.packaging import lambda_python
    from infra.settings import REPO_ROOT
    from maas_dev.bench.coldstart import _MAAS_CHILD, _run_child
    from maas_dev.bench.common import ensure_built
    from maas_dev.lambda_bundle import can_isolate, run_bundle, runtime_provided_dir

    if not can_isolate():
        raise RuntimeError("the Lambda cold start needs root and unshare (a read-only /var/task mount)")
    task = load_catalog(REPO_ROOT / "catalog.toml")[name].task
    event_file = EVENTS.get(task.value)
    if event_file is None:
        raise RuntimeError(f"no API Gateway sample event for a {task.value} model in events/")
    ensure_built(name, "fp32/model.onnx", console)
    event = json.loads((REPO_ROOT / "events" / event_file).read_text())
    work = Path(tempfile.mkdtemp(prefix="maas-coldstart-"))
    try:
        root, size_mb, arch = stage_bundle(name, work, console)
        runtime = runtime_provided_dir(work / "runtime", Path(boto3.__file__).resolve().parents[1])
        environment = RuntimeEnvironment(
            models=f"/var/task/artifacts/{name}", service_name=service_name(name)
        ).variables() | {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1"}
        python = lambda_python()
        bundle: list[dict[str, float]] = []
        venv: list[dict[str, float]] = []
        for index in range(rounds):
            run = run_bundle(root, python=python, handler="functions.handlers.http.handler",
                             environment=environment, events=[event], runtime_dir=runtime)  # fmt: skip
            if run.results[0]["response"]["statusCode"] != 200:
                raise RuntimeError(f"the deployed zip answered {run.results[0]['response']}")
            assert run.first_response_s is not None
            bundle.append({"init_s": run.init_s, "first_response_s": run.first_response_s, "rss_mb": run.peak_rss_mb})
            child = _run_child(_MAAS_CHILD, str(REPO_ROOT / "artifacts" / name))
            venv.append({"first_response_s": child["total_ms"] / 1000, "rss_mb": child["max_rss_mb"]})
            console.log(f"round {index + 1}/{rounds}: zip init {run.init_s:.3f} s, first response "
                        f"{run.first_response_s:.3f} s; virtualenv {child['total_ms'] / 1000:.3f} s")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = run_header(
        name,
        architecture=arch,
        lambda_python=_python_version(python),
        rounds=rounds,
        unzipped_mb=round(size_mb, 1),
        bundle=_summary(bundle),
        virtualenv=_summary(venv),
        targets={"init_s": INIT_TARGET_S, "first_response_s": FIRST_RESPONSE_TARGET_S, "unzipped_mb": SIZE_TARGET_MB},
    )
    return write_report(results, out_dir, console)


def _python_version(python: Path) -> str:
    import subprocess

    probe = subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return probe.stdout.strip()


def _summary(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = samples[0].keys()
    return {
        key: {
            "median": statistics.median(s[key] for s in samples),
            "min": min(s[key] for s in samples),
            "max": max(s[key] for s in samples),
        }
        for key in keys
    }


def write_report(results: dict[str, Any], out_dir: Path, console: Console) -> Path:
    """``<model>-lambda-cold-start.{md,json}``: the deployed zip's cold start against its targets."""
    name = results["model"]
    stem = f"{name}-lambda-cold-start"
    write_json(results, out_dir, stem)
    bundle, venv, targets = results["bundle"], results["virtualenv"], results["targets"]
    cpu = results["machine"]
    lines = [
        f"# {name}: cold start of the deployed Lambda zip",
        "",
        f"Measured {results['date']} on {cpu['cpu']} ({cpu['cpus_used']} CPUs used), {results['architecture']}, "
        f"CPython {results['lambda_python']} (Lambda's runtime version), {results['rounds']} rounds, "
        "each a new process.",
        "",
        "The zip is what `cdk deploy` ships (strict packaging: locked dependencies built by `infra.build_deps`, the "
        "runtime and the model, all precompiled by Lambda's Python), unzipped and run from a read-only `/var/task` "
        "with `python3.13 -I -S` as an unprivileged user, answering one real API Gateway event "
        "(`maas_dev/lambda_bundle.py`). Rounds alternate with the same model loaded from the development virtualenv.",
        "",
        "| measure | deployed zip (median, min–max) | target | virtualenv (median) |",
        "|---|---|---|---|",
        f"| init (import the handler: model loaded, session warmed) | {_cell(bundle['init_s'])} "
        f"| ≤ {targets['init_s']} s | – |",
        f"| process start → first response | {_cell(bundle['first_response_s'])} | ≤ {targets['first_response_s']} s "
        f"| {venv['first_response_s']['median']:.3f} s |",
        f"| peak RSS | {bundle['rss_mb']['median']:.0f} MB | – | {venv['rss_mb']['median']:.0f} MB |",
        f"| unzipped size, bytecode included | {results['unzipped_mb']:.1f} MiB "
        f"| ≤ {targets['unzipped_mb']:.0f} MB | – |",
        "",
        "A 2,048 MB Lambda function gets about 1.2 vCPU and this run had the CPUs above, shared with whatever else "
        "ran: the figures are this machine's, measured the way Lambda runs the zip.",
        "",
    ]
    path = out_dir / f"{stem}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    table = Table("measure", "deployed zip", "target")
    table.add_row("init", _cell(bundle["init_s"]), f"≤ {targets['init_s']} s")
    table.add_row("first response", _cell(bundle["first_response_s"]), f"≤ {targets['first_response_s']} s")
    table.add_row("unzipped", f"{results['unzipped_mb']:.1f} MiB", f"≤ {targets['unzipped_mb']:.0f} MB")
    console.print(table)
    return path


def _cell(stat: dict[str, float]) -> str:
    return f"{stat['median']:.3f} s ({stat['min']:.3f}–{stat['max']:.3f})"
