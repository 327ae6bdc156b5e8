"""Artifacts published to S3 (moto) and loaded from s3:// URIs: verified, cached once, corruption refused."""

from __future__ import annotations

import shutil

import boto3
import pytest
from moto import mock_aws

from functions.errors import IntegrityError
from functions.inference.loader import resolve_artifact
from functions.inference.registry import load_pipeline
from model_build.publish import publish_artifact

BUCKET = "maas-artifacts-test"


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def test_publish_is_content_addressed_and_loadable(s3, built_artifacts, tmp_path):
    artifact = built_artifacts["minilm-embed"]
    uri = publish_artifact(artifact, bucket=BUCKET, s3_client=s3)
    from functions.contract import Manifest

    manifest = Manifest.read(artifact)
    assert uri == f"s3://{BUCKET}/models/minilm-embed/{manifest.version}"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert keys == {
        f"models/minilm-embed/{manifest.version}/{n}" for n in ("manifest.json", "model.onnx", "tokenizer.json")
    }

    pipeline = load_pipeline(uri, cache_dir=tmp_path / "cache", s3_client=s3, warmup=False)
    vectors, _ = pipeline.embed(["loaded from s3"])
    assert vectors.shape == (1, 384)


def test_second_load_reuses_the_verified_download(s3, built_artifacts, tmp_path):
    uri = publish_artifact(built_artifacts["minilm-embed"], bucket=BUCKET, s3_client=s3)
    first, _ = resolve_artifact(uri, tmp_path, s3_client=s3)
    downloads = []
    original = s3.download_file
    s3.download_file = lambda *a, **k: (downloads.append(a[1]), original(*a, **k))[1]
    second, _ = resolve_artifact(uri, tmp_path, s3_client=s3)
    assert first == second
    assert downloads == [f"{uri.split(BUCKET + '/')[1]}/manifest.json"]  # only the manifest is re-read


def test_corrupted_file_in_s3_is_refused_and_nothing_cached(s3, built_artifacts, tmp_path):
    uri = publish_artifact(built_artifacts["minilm-embed"], bucket=BUCKET, s3_client=s3)
    key = uri.split(f"{BUCKET}/")[1] + "/tokenizer.json"
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=key, Body=body.replace(b"[PAD]", b"[PAX]", 1))
    with pytest.raises(IntegrityError, match=r"tokenizer\.json has sha256"):
        resolve_artifact(uri, tmp_path, s3_client=s3)
    assert not any(tmp_path.rglob("model.onnx")), "a refused artifact must not stay in the cache"


def test_corrupted_local_artifact_is_refused(built_artifacts, tmp_path):
    copy = tmp_path / "minilm-embed"
    shutil.copytree(built_artifacts["minilm-embed"], copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.onnx"):
        resolve_artifact(str(copy), tmp_path / "cache")


def test_missing_s3_artifact_is_a_clear_error(s3, tmp_path):
    from functions.errors import ArtifactError

    with pytest.raises(ArtifactError, match="cannot read s3://"):
        resolve_artifact(f"s3://{BUCKET}/models/none/v1", tmp_path, s3_client=s3)
