"""The `maas` CLI as users run it."""

from __future__ import annotations

import json

import boto3
import pytest
from typer.testing import CliRunner

from maas_dev.cli import app
from tests.conftest import EVENTS_DIR

runner = CliRunner()


def test_list_shows_catalog_and_build_state(built_artifacts):
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    assert "minilm-embed" in result.output and "intent-classifier" in result.output and "gpu" in result.output


def test_build_unknown_model_exits_2_with_known_names():
    result = runner.invoke(app, ["build", "no-such-model"])
    assert result.exit_code == 2
    assert "not in the catalog" in result.output and "minilm-embed" in result.output


def test_invoke_runs_the_http_handler_on_an_event(built_artifacts, monkeypatch):
    from functions.inference import registry
    from functions.settings import get_settings

    monkeypatch.setenv("MAAS_MODELS", ",".join(str(p) for p in built_artifacts.values()))
    get_settings.cache_clear()
    registry.get_registry.cache_clear()
    import importlib

    import functions.handlers.http as http_module

    importlib.reload(http_module)
    result = runner.invoke(app, ["invoke", str(EVENTS_DIR / "apigw_v1_predict_embed.json")])
    assert result.exit_code == 0, result.output
    response = json.loads(result.stdout)
    assert response["statusCode"] == 200 and len(json.loads(response["body"])["outputs"]) == 2


def test_publish_to_a_real_s3_endpoint(built_artifacts, monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    from maas_dev.server import free_port

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="cli-artifacts")
        result = runner.invoke(
            app, ["publish", "intent-classifier", "--bucket", "cli-artifacts", "--endpoint-url", endpoint]
        )
        assert result.exit_code == 0, result.output
        uri = result.output.strip()
        assert uri.startswith("s3://cli-artifacts/models/intent-classifier/")
        prefix = uri.removeprefix("s3://cli-artifacts/")
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="cli-artifacts", Prefix=prefix)["Contents"]}
        assert f"{prefix}/manifest.json" in keys and f"{prefix}/model.onnx" in keys
    finally:
        server.stop()


def test_batch_runs_an_s3_job_through_a_local_s3_api(built_artifacts, tmp_path, monkeypatch):
    monkeypatch.setenv("MAAS_MODELS", str(built_artifacts["minilm-embed"]))
    source = tmp_path / "job.jsonl"
    source.write_text('{"id": "a", "inputs": "hello"}\n{"id": "b", "inputs": 7}\n{"id": "c", "inputs": "bye"}\n')
    out = tmp_path / "job.out.jsonl"
    result = runner.invoke(app, ["batch", str(source), "--model", "minilm-embed", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["a", "b", "c"]
    assert len(lines[0]["output"]) == 384 and lines[1]["error"]["code"] == "invalid_input"


def test_pull_rolls_a_published_version_back_and_refuses_a_tampered_one(built_artifacts, tmp_path, monkeypatch):
    from moto import mock_aws

    from functions.inference.loader import verify_artifact

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    source = built_artifacts["intent-classifier"]
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="cli-artifacts")
        published = runner.invoke(app, ["publish", str(source), "--bucket", "cli-artifacts"])
        assert published.exit_code == 0, published.output
        uri = published.output.strip()
        # WHEN that version is pulled into an artifact directory that holds something else
        target = tmp_path / "artifacts" / "intent-classifier"
        target.mkdir(parents=True)
        (target / "stale.txt").write_text("a newer build")
        pulled = runner.invoke(app, ["pull", uri, "--out", str(target)])
        assert pulled.exit_code == 0, pulled.output
        # THEN the directory is exactly the published version, verified
        assert verify_artifact(target).version == verify_artifact(source).version == uri.rsplit("/", 1)[-1]
        assert not (target / "stale.txt").exists()
        # AND a version whose bytes changed in the bucket is refused, leaving the directory as it was
        key = uri.removeprefix("s3://cli-artifacts/") + "/model.onnx"
        s3.put_object(Bucket="cli-artifacts", Key=key, Body=b"not the model")
        refused = runner.invoke(app, ["pull", uri, "--out", str(target)])
        assert refused.exit_code == 1 and "sha256" in refused.output
        assert verify_artifact(target).version == uri.rsplit("/", 1)[-1]
