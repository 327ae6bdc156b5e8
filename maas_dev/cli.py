"""The `maas` command line: build, publish, serve, invoke, bench, demo.

Build-only libraries (torch, transformers, onnx) are imported inside the commands that need them,
so `maas serve` and `maas invoke` work on a runtime-only install.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from maas_dev.keys_cli import keys_app

app = typer.Typer(
    help="maas: PyTorch models → validated ONNX artifacts → HTTPS endpoints on AWS.", no_args_is_help=True
)
console = Console()


def _artifacts_root() -> Path:
    from model_build.catalog import REPO_ROOT

    return Path(os.environ.get("MAAS_ARTIFACTS_DIR", REPO_ROOT / "artifacts"))


def resolve_model_uri(name_or_uri: str) -> str:
    """A catalog name means its built artifact dir; anything else is a path or s3:// URI."""
    if name_or_uri.startswith("s3://") or "/" in name_or_uri or Path(name_or_uri).is_dir():
        return name_or_uri
    return str(_artifacts_root() / name_or_uri)


def _built_models() -> list[str]:
    root = _artifacts_root()
    return sorted(str(p.parent) for p in root.glob("*/manifest.json")) if root.is_dir() else []


@app.command("list")
def list_models() -> None:
    """List catalog models and whether each is built."""
    from model_build.catalog import load_catalog

    table = Table("model", "task", "quantization", "target", "built")
    for name, entry in load_catalog().items():
        built = (_artifacts_root() / name / "manifest.json").is_file()
        table.add_row(name, entry.task.value, entry.quantization, entry.deploy.target, "yes" if built else "no")
    console.print(table)


@app.command()
def build(
    models: Annotated[list[str], typer.Argument(help="catalog model names")],
    out: Annotated[Path | None, typer.Option(help="artifact directory (default artifacts/<model>)")] = None,
    preset: Annotated[
        str | None, typer.Option(help="try another quantization preset than the catalog's (same gates)")
    ] = None,
) -> None:
    """Export, optimize, quantize and validate a catalog model; fail if any quality gate fails."""
    from model_build.build import build_model
    from model_build.catalog import CatalogError, get_entry
    from model_build.validate import GateError

    for name in models:
        try:
            entry = get_entry(name)
            if preset is not None:
                from model_build.quantize import get_preset

                get_preset(preset)  # an unknown name fails here, listing the valid ones
                entry = entry.model_copy(update={"quantization": preset})
        except (CatalogError, ValueError) as exc:
            console.print(str(exc), style="red", markup=False)
            raise typer.Exit(2) from None
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task(f"{name}: starting", total=None)
            try:
                result = build_model(
                    entry,
                    artifact_dir=out if out and len(models) == 1 else None,
                    progress=lambda step, t=task, n=name: bar.update(t, description=f"{n}: {step}"),
                )
            except GateError as exc:
                console.print(str(exc), style="red", markup=False)
                raise typer.Exit(1) from None
        _print_gates(result.manifest)
        console.print(
            f"[green]built {name}[/green] v{result.manifest.version} → {result.artifact_dir} ({result.seconds:.1f}s)"
        )


def _print_gates(manifest: object) -> None:
    table = Table("gate", "measured", "required", "ok", title=f"{getattr(manifest, 'name', '')} quality gates")
    for g in getattr(manifest, "gates", []):
        table.add_row(g.name, f"{g.value:.6g}", f"{g.comparison} {g.threshold:g}", "✓" if g.passed else "✗")
    console.print(table)


@app.command()
def publish(
    model: Annotated[str, typer.Argument(help="catalog name or artifact directory")],
    bucket: Annotated[str, typer.Option(help="artifact bucket")],
    prefix: Annotated[str, typer.Option(help="key prefix")] = "models",
    endpoint_url: Annotated[str | None, typer.Option(help="S3 endpoint (e.g. a local moto server)")] = None,
) -> None:
    """Upload a built artifact to S3 under a content-addressed version prefix."""
    import boto3

    from model_build.publish import publish_artifact

    client = boto3.client("s3", endpoint_url=endpoint_url)
    uri = publish_artifact(Path(resolve_model_uri(model)), bucket=bucket, prefix=prefix, s3_client=client)
    typer.echo(uri)  # plain: scripts capture it


@app.command()
def pull(
    uri: Annotated[str, typer.Argument(help="a published version: s3://<bucket>/models/<name>/<version>")],
    out: Annotated[Path | None, typer.Option(help="artifact directory (default artifacts/<name>)")] = None,
    endpoint_url: Annotated[str | None, typer.Option(help="S3 endpoint (e.g. a local moto server)")] = None,
) -> None:
    """Fetch a published artifact version (sha256-verified) into artifacts/: roll a model back, then cdk deploy."""
    import boto3

    from functions.errors import MaasError
    from model_build.publish import pull_artifact

    name = uri.rstrip("/").split("/")[-2] if uri.count("/") >= 4 else ""
    target = out or _artifacts_root() / name
    if not name and out is None:
        raise typer.BadParameter("expected s3://<bucket>/<prefix>/<name>/<version>, or pass --out")
    try:
        version = pull_artifact(uri, target, s3_client=boto3.client("s3", endpoint_url=endpoint_url))
    except MaasError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{target}: version {version}")


@app.command()
def rollback(
    model: Annotated[str, typer.Argument(help="catalog model name")],
    stage: Annotated[str, typer.Option(help="the stage it is deployed in")] = "dev",
    to: Annotated[
        str | None,
        typer.Option(help="artifact version (content hash) or Lambda version number; default: the previous one"),
    ] = None,
    region: Annotated[str | None, typer.Option(help="AWS region (default: the profile's)")] = None,
    endpoint_url: Annotated[str | None, typer.Option(help="Lambda endpoint (e.g. a local moto server)")] = None,
) -> None:
    """Move a deployed Lambda model's `live` aliases back to an earlier, retained version (seconds, no deploy)."""
    import boto3

    from maas_dev.rollback import RollbackError
    from maas_dev.rollback import rollback as move_aliases

    client = boto3.client("lambda", region_name=region, endpoint_url=endpoint_url)
    try:
        moves = move_aliases(client, stage=stage, model=model, to=to)
    except RollbackError as exc:
        console.print(str(exc), style="red", markup=False)
        raise typer.Exit(1) from None
    for move in moves:
        typer.echo(f"{move.function} ({move.kind}): live {move.from_version} -> {move.to_version}")


@app.command()
def serve(
    models: Annotated[
        list[str] | None, typer.Argument(help="names, artifact dirs or s3:// URIs (default: all built)")
    ] = None,
    host: str = "127.0.0.1",
    port: int = 8080,
) -> None:
    """Serve models locally with uvicorn (the same app Lambda and the GPU container run).

    Beyond loopback (e.g. --host 0.0.0.0) it refuses to start unless MAAS_API_KEYS is set; callers then send
    a key in 'x-api-key'. Keys come from the environment only, never the command line (visible in `ps`).
    """
    _quiet_local_metrics()
    from functions.inference.registry import registry_from_settings
    from functions.settings import Settings, get_settings
    from functions.web.security import UnsafeBindError, require_keys_for_host
    from maas_dev.server import serve as run_server

    try:
        require_keys_for_host(host, get_settings().api_key_list())
    except UnsafeBindError as exc:
        console.print(exc.message, style="red", markup=False)
        raise typer.Exit(2) from None
    uris = [resolve_model_uri(m) for m in models] if models else _built_models()
    if not uris:
        console.print("[red]no models: build one with `maas build minilm-embed` or pass artifact paths[/red]")
        raise typer.Exit(2)
    registry = registry_from_settings(Settings(models=",".join(uris)))
    for uri, error in registry.failures.items():
        console.print(f"[red]{uri}: {error}[/red]")
    console.print(f"serving {', '.join(registry.names())} on http://{host}:{port} (docs at /docs)")
    run_server(registry, host=host, port=port)


@app.command()
def invoke(
    event_file: Annotated[Path, typer.Argument(help="a Lambda event JSON, e.g. events/apigw_v2_embed.json")],
    models: Annotated[list[str] | None, typer.Option("--model", help="model(s) to load (default: all built)")] = None,
) -> None:
    """Run the Lambda handler that matches the event locally and print its response."""
    from maas_dev.invoke import invoke_event

    uris = [resolve_model_uri(m) for m in models] if models else _built_models()
    os.environ.setdefault("MAAS_MODELS", ",".join(uris))
    response = invoke_event(json.loads(event_file.read_text()))
    console.print_json(json.dumps(response))


@app.command()
def batch(
    source: Annotated[str, typer.Argument(help="a JSONL/CSV file (or image) to run, or with --plan: s3://bucket/key")],
    model: Annotated[str | None, typer.Option(help="catalog name of a built model (default: from the key)")] = None,
    out: Annotated[Path | None, typer.Option(help="where to download the output")] = None,
    plan: Annotated[bool, typer.Option("--plan", help="print the route, chunks, time and cost; run nothing")] = False,
    route: Annotated[str, typer.Option(help="auto (by size, as deployed), direct or chunks")] = "auto",
    workers: Annotated[int, typer.Option(help="processes running chunks (the Map's concurrency, locally)")] = 2,
    concurrency: Annotated[
        int | None, typer.Option(help="MaxConcurrency for --plan (default: the dev stage's batch_map_concurrency)")
    ] = None,
    endpoint_url: Annotated[str | None, typer.Option(help="running S3 endpoint (default: local moto)")] = None,
) -> None:
    """Run an S3 batch job as deployed, against a local S3 (moto) or --endpoint-url: objects that fit one
    invocation go to the S3 job function, larger ones through the state machine's plan, chunk and merge steps
    (same handler, a process pool for the Map). --plan prints what the deployed stage would do with an object."""
    from maas_dev.batch_local import plan_report, run_batch, sizing_for

    if route not in ("auto", "direct", "chunks"):
        raise typer.BadParameter("--route is auto, direct or chunks")
    if plan:
        try:
            lines = plan_report(source, model=model, map_concurrency=concurrency, endpoint_url=endpoint_url)
        except ValueError as exc:
            console.print(str(exc), style="red", markup=False)
            raise typer.Exit(2) from None
        typer.echo("\n".join(lines))
        return
    if model is None:
        raise typer.BadParameter("--model is required to run a local file")
    os.environ.setdefault("MAAS_MODELS", resolve_model_uri(model))
    result = run_batch(Path(source), model=model, route=route, workers=workers, out=out, endpoint_url=endpoint_url,
                       sizing=sizing_for(model, map_concurrency=concurrency))
    console.print(f"route: {result.route}")
    console.print_json(json.dumps(result.summary))


@app.command()
def bench(
    model: Annotated[str, typer.Argument(help="catalog model name (built)")],
    seq: Annotated[int, typer.Option(help="tokens per input (encoders)")] = 128,
    repeats: Annotated[int, typer.Option(help="timed runs per case")] = 20,
    new_tokens: Annotated[int, typer.Option(help="tokens generated per run (generation)")] = 128,
    compare_presets: Annotated[
        bool, typer.Option(help="embeddings: quality and speed of every INT8 preset in one run")
    ] = False,
    lambda_cold_start: Annotated[
        bool, typer.Option(help="the deployed zip's cold start, run as Lambda runs it (read-only /var/task, 3.13)")
    ] = False,
    peers: Annotated[
        bool,
        typer.Option(
            help="maas against the peers users pick instead (sentence-transformers' ONNX exports, fastembed, "
            "llama.cpp, onnxruntime-genai, torch), each in its own process; missing peers are skipped, saying how"
        ),
    ] = False,
    rounds: Annotated[int, typer.Option(help="--peers: alternating timing rounds")] = 5,
    out_dir: Annotated[Path, typer.Option(help="where the JSON and Markdown go")] = Path("docs/benchmarks"),
) -> None:
    """Side by side in one run: torch eager vs ORT fp32 vs the maas artifact (and, per task: HTTP vs
    session.run, S3 job throughput, cold start, roofline; generation tokens/s; image top-1 agreement)."""
    from functions.contract import Task
    from model_build.catalog import get_entry

    task = get_entry(model).task
    if lambda_cold_start:
        from maas_dev.bench.lambda_coldstart import run_lambda_cold_start

        console.print(f"wrote {run_lambda_cold_start(model, rounds=min(repeats, 7), out_dir=out_dir, console=console)}")
        return
    if compare_presets:
        if task != Task.SENTENCE_EMBEDDINGS:
            raise typer.BadParameter("--compare-presets judges sentence-embeddings models (cosine on held-out text)")
        from maas_dev.bench.presets import compare_presets as run_compare

        console.print(f"wrote {run_compare(model, out_dir=out_dir, console=console)}")
        return
    if peers:
        if task == Task.TEXT_GENERATION:
            from maas_dev.bench.generation_peers import run_generation_peers

            report = run_generation_peers(model, rounds=rounds, new_tokens=new_tokens, out_dir=out_dir, console=console)
        elif task in (Task.SENTENCE_EMBEDDINGS, Task.TEXT_CLASSIFICATION):
            from maas_dev.bench.encoder_peers import run_encoder_peers

            report = run_encoder_peers(model, rounds=rounds, out_dir=out_dir, console=console)
        else:
            raise typer.BadParameter("--peers compares text models (embeddings, classification, generation)")
        console.print(f"wrote {report}")
        return
    if task == Task.TEXT_GENERATION:
        from maas_dev.bench.generation import run_generation_bench

        report = run_generation_bench(model, new_tokens=new_tokens, out_dir=out_dir, console=console)
    elif task == Task.IMAGE_CLASSIFICATION:
        from maas_dev.bench.image import run_image_bench

        report = run_image_bench(model, repeats=repeats, out_dir=out_dir, console=console)
    elif task in (Task.SENTENCE_EMBEDDINGS, Task.TEXT_CLASSIFICATION):
        from maas_dev.bench.encoder import run_bench

        report = run_bench(model, seq=seq, repeats=repeats, out_dir=out_dir, console=console)
    else:
        raise typer.BadParameter(f"no benchmark for task {task} yet (models: encoders, generation, images)")
    console.print(f"wrote {report}")


app.add_typer(keys_app, name="keys")


@app.command()
def gateway(
    stage: Annotated[str, typer.Option(help="the stage to serve (its file infra/stages/<stage>.toml)")] = "dev",
    port: Annotated[int, typer.Option(help="loopback port")] = 8787,
    tenant: Annotated[str | None, typer.Option(help="print a fresh key for this tenant at start")] = "demo",
    lambda_deps: Annotated[Path, typer.Option(help="built Lambda dependencies (python -m infra.build_deps)")] = Path(
        "build/lambda-deps"
    ),
    work: Annotated[Path, typer.Option(help="where the assembly and the task roots go")] = Path("build/gateway"),
) -> None:
    """Serve a stage on loopback as API Gateway serves it: the bearer-key authorizers, usage plans, Lambda proxy
    events and streamed generation, every function from its built bundle (as Lambda runs it), AWS from moto.

    Needs what a deploy needs (the stage's models built, `python -m infra.build_deps --arch <this CPU>`), root and
    unshare (for the read-only /var/task), and CPython 3.13. Keys: `maas keys create --endpoint-url <printed>`.
    """
    import boto3

    from infra.packaging import lambda_python
    from maas_dev.gateway.local import TaskRoots, host_architecture, local_stage, synthesize_for_this_machine
    from maas_dev.lambda_bundle import can_isolate, runtime_provided_dir
    from model_build.catalog import REPO_ROOT

    _quiet_local_metrics()
    if not can_isolate():
        console.print("the local gateway runs each function as Lambda does: it needs root and unshare", style="red")
        raise typer.Exit(2)
    console.print(f"synthesizing stage {stage} for {host_architecture()} (strict packaging)…")
    outdir = synthesize_for_this_machine(
        work,
        config_file=f"infra/stages/{stage}.toml",
        lambda_deps=lambda_deps.resolve(),
        artifacts=Path(_artifacts_root()).resolve(),
        catalog=REPO_ROOT / "catalog.toml",
    )
    runtime = runtime_provided_dir(work / "runtime", Path(boto3.__file__).resolve().parents[1])
    roots = TaskRoots(work=work / "roots", lambda_deps=lambda_deps.resolve())
    with local_stage(outdir, stage, task_root=roots, python=lambda_python(), runtime_dir=runtime, port=port) as local:
        console.print(f"API: {local.url}/   (local AWS for `maas keys --endpoint-url`: {local.aws_endpoint})")
        if tenant:
            typer.echo(f"key for tenant {tenant}: {local.create_key(tenant)}")
        console.print("functions start at their first request (a cold start); Ctrl-C stops")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopping")


@app.command()
def demo(rebuild: Annotated[bool, typer.Option(help="rebuild even if artifacts exist")] = False) -> None:
    """Build the default models, serve them locally, call every protocol, print the answers, stop."""
    _quiet_local_metrics()
    from maas_dev.demo import run_demo

    run_demo(console, rebuild=rebuild)


def _quiet_local_metrics() -> None:
    """Local servers print no CloudWatch EMF documents (they only mean something on AWS); set
    POWERTOOLS_METRICS_DISABLED=false to see them."""
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")


def main() -> None:
    """Entry point of the ``maas`` command: a configuration error is one line saying what to fix, exit 2."""
    from functions.contract.errors import ConfigError

    try:
        app()
    except ConfigError as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
