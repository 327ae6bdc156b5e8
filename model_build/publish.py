"""`maas publish`: upload a verified artifact under a content-addressed prefix.

Layout: ``s3://<bucket>/<prefix>/<model>/<version>/{manifest.json,model.onnx,...}`` where version is
the manifest's content hash, so a prefix never changes once written. The manifest is uploaded last:
a reader that finds it finds every file it lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from functions.inference.loader import verify_artifact
from functions.manifest import MANIFEST_FILE


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
