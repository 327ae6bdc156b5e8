"""Resolve an artifact location (local dir or ``s3://``) to a verified local directory.

S3 artifacts are downloaded once per process into the cache dir (``/tmp`` on Lambda) under their
content version, verified, and only then marked complete; a later load of the same version reuses
them. Every file's sha256 is checked against the manifest before anything is served.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pydantic import ValidationError

from functions.errors import ArtifactError, IntegrityError
from functions.manifest import MANIFEST_FILE, Manifest, sha256_file

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_VERIFIED_MARKER = ".verified"
# Files that can execute code when loaded; an artifact never needs them and the runtime never unpickles.
_UNSAFE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib", ".npy", ".npz"}


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(f"no {MANIFEST_FILE} in {directory}: build the model with `maas build` first")
    try:
        return Manifest.read(directory)
    except (ValidationError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a valid maas manifest: {exc}") from exc


def verify_artifact(directory: Path) -> Manifest:
    """Check every file listed in the manifest against its sha256; refuse unsafe or unlisted payloads."""
    manifest = read_manifest(directory)
    for name, entry in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"artifact {manifest.name} is missing {name}")
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise IntegrityError(
                f"artifact {manifest.name}: {name} has sha256 {actual[:12]}…, manifest says "
                f"{entry.sha256[:12]}…; the file is corrupted or was modified, rebuild or re-publish it"
            )
    for path in directory.iterdir():
        if path.suffix.lower() in _UNSAFE_SUFFIXES:
            raise ArtifactError(
                f"artifact {manifest.name} contains {path.name}: pickled/torch files are refused at run time"
            )
    for required in (manifest.model_file, manifest.tokenizer_file):
        if required is not None and required not in manifest.files:
            raise ArtifactError(f"artifact {manifest.name}: manifest does not list its own file {required}")
    return manifest


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ArtifactError(f"{uri!r} is not an s3://bucket/prefix URI")
    return parsed.netloc, parsed.path.strip("/")


def resolve_artifact(uri: str, cache_dir: Path, s3_client: S3Client | None = None) -> tuple[Path, Manifest]:
    """Return a verified local directory and its manifest for a local path or an ``s3://`` URI."""
    if uri.startswith("s3://"):
        return _fetch_s3(uri, cache_dir, s3_client)
    directory = Path(uri).expanduser()
    if not directory.is_dir():
        raise ArtifactError(f"artifact directory {directory} does not exist: run `maas build <model>` first")
    return directory, verify_artifact(directory)


def _fetch_s3(uri: str, cache_dir: Path, s3_client: S3Client | None) -> tuple[Path, Manifest]:
    bucket, prefix = split_s3_uri(uri)
    client: Any = s3_client
    if client is None:
        import boto3  # imported lazily: local-only serving never pays for it

        client = boto3.client("s3")
    key_prefix = f"{prefix}/" if prefix else ""
    staging = Path(tempfile.mkdtemp(prefix="maas-", dir=_ensure_dir(cache_dir)))
    try:
        _download(client, bucket, key_prefix + MANIFEST_FILE, staging / MANIFEST_FILE)
        manifest = read_manifest(staging)
        final = cache_dir / manifest.name / manifest.version
        if (final / _VERIFIED_MARKER).is_file():
            return final, verify_artifact(final)
        for name in manifest.files:
            _download(client, bucket, key_prefix + name, staging / name)
        verify_artifact(staging)
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, final)
        (final / _VERIFIED_MARKER).touch()
        return final, manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download(client: Any, bucket: str, key: str, dest: Path) -> None:
    from botocore.exceptions import ClientError

    try:
        client.download_file(bucket, key, str(dest))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise ArtifactError(f"cannot read s3://{bucket}/{key} ({code or exc}): check the URI and permissions") from exc


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
