"""`maas publish`: upload a verified artifact under a content-addressed prefix.

Layout: ``s3://<bucket>/<prefix>/<model>/<version>/{manifest.json,model.onnx,...}`` where version is
the manifest's content hash, so a prefix never changes once written. The manifest is uploaded last:
a reader that finds it finds every file it lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from functions.contract import MANIFEST_FILE
from functions.inference.loader import verify_artifact


def publish_artifact(
    artifact_dir: Path, *, bucket: str, prefix: str = "models", s3_client: Any = None, kms_key_id: str | None = None
) -> str:
    """Upload the artifact (after re-verifying every sha256) and return its ``s3://`` URI."""
    manifest = verify_artifact(artifact_dir)
    if s3_client is None:
        import boto3

        s3_client = boto3.client("s3")
    base = f"{prefix.strip('/')}/{manifest.name}/{manifest.version}".lstrip("/")
    extra: dict[str, str] = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id else {}
    for name, entry in manifest.files.items():
        s3_client.upload_file(
            str(artifact_dir / name),
            bucket,
            f"{base}/{name}",
            ExtraArgs={"Metadata": {"sha256": entry.sha256}, **extra},
        )
    s3_client.upload_file(
        str(artifact_dir / MANIFEST_FILE),
        bucket,
        f"{base}/{MANIFEST_FILE}",
        ExtraArgs={"ContentType": "application/json", **extra},
    )
    return f"s3://{bucket}/{base}"


def pull_artifact(uri: str, artifact_dir: Path, *, s3_client: Any = None) -> str:
    """Download a published version into ``artifact_dir`` (every sha256 verified first); return its version.

    The roll-back path: ``maas pull s3://<bucket>/models/<name>/<older version>`` then ``cdk deploy`` puts
    exactly that artifact back (its content hash is the version infra deploys).
    """
    import shutil
    import tempfile

    from functions.inference.loader import resolve_artifact

    with tempfile.TemporaryDirectory(prefix="maas-pull-") as cache:
        directory, manifest = resolve_artifact(uri, Path(cache), s3_client=s3_client)
        staging = artifact_dir.with_name(f".{artifact_dir.name}.pulling")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in [*manifest.files, MANIFEST_FILE]:
            shutil.copy2(directory / name, staging / name)
    verify_artifact(staging)
    if artifact_dir.exists():
        shutil.rmtree(artifact_dir)
    staging.rename(artifact_dir)
    return manifest.version
