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

from functions.contract import MANIFEST_FILE, Manifest, sha256_file
from functions.errors import ArtifactError, IntegrityError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class UnsafeArtifactError(ArtifactError):
    """An artifact that would make the runtime read outside itself (ONNX external data, symlinks)."""

    code = "artifact_unsafe"


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
    for name in manifest.files:
        if (directory / name).is_symlink():
            raise UnsafeArtifactError(
                f"artifact {manifest.name}: {name} is a symbolic link; artifacts hold plain files"
            )
        if name.endswith(".onnx"):
            for location in onnx_external_data(directory / name):
                if location not in manifest.files:  # listed names are plain file names (see Manifest)
                    raise UnsafeArtifactError(
                        f"artifact {manifest.name}: {name} points its external data at {location!r}, which is not "
                        "a file of the artifact; refusing to load it (ONNX path traversal, CVE-2024-27318)"
                    )
    return manifest


# Where TensorProtos can sit in an ONNX ModelProto: message kind → {field number: kind of the submessage}.
_ONNX_TENSOR_PATHS: dict[str, dict[int, str]] = {
    "model": {7: "graph", 25: "function"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
}


def onnx_external_data(path: Path) -> list[str]:
    """Every external-data ``location`` in an ONNX file, read from the protobuf wire format (no onnx package)."""
    import mmap

    if path.stat().st_size == 0:
        raise ArtifactError(f"{path.name} is empty, not an ONNX model")
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        locations: list[str] = []
        stack = [("model", 0, len(buf))]
        while stack:
            kind, start, end = stack.pop()
            entry: dict[int, bytes] = {}
            for field, wire, value_start, value_end in _protobuf_fields(buf, start, end, path):
                if kind == "entry" and wire == 2:
                    entry[field] = buf[value_start:value_end]
                elif wire == 2 and field in _ONNX_TENSOR_PATHS.get(kind, {}):
                    stack.append((_ONNX_TENSOR_PATHS[kind][field], value_start, value_end))
            if kind == "entry" and entry.get(1) == b"location":
                locations.append(entry.get(2, b"").decode("utf-8", errors="replace"))
        return locations


def _protobuf_fields(buf: Any, start: int, end: int, path: Path) -> Any:
    """(field, wire type, value start, value end) of each field of one protobuf message in ``buf[start:end]``."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end, path)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, after = _varint(buf, pos, end, path)
        elif wire in (1, 5):
            after = pos + (8 if wire == 1 else 4)
        elif wire == 2:
            length, pos = _varint(buf, pos, end, path)
            after = pos + length
        else:
            raise ArtifactError(f"{path.name} is not a valid ONNX file (protobuf wire type {wire})")
        if after > end:
            raise ArtifactError(f"{path.name} is not a valid ONNX file (truncated field {field})")
        yield field, wire, pos, after
        pos = after


def _varint(buf: Any, pos: int, end: int, path: Path) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift < 64:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise ArtifactError(f"{path.name} is not a valid ONNX file (bad varint)")


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
        client = _default_s3_client()
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


def _default_s3_client() -> Any:
    """An S3 client that gives up after a bounded number of tries: a cold start fails clearly, never hangs."""
    import boto3  # imported lazily: local-only serving never pays for it
    from botocore.config import Config

    from functions.settings import get_settings

    config = Config(retries={"total_max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30)
    client = boto3.client("s3", config=config)
    owner = get_settings().expected_bucket_owner
    if owner:

        def expect_owner(params: dict[str, Any], model: Any, **_: Any) -> None:
            if model.input_shape is not None and "ExpectedBucketOwner" in model.input_shape.members:
                params.setdefault("ExpectedBucketOwner", owner)

        client.meta.events.register("provide-client-params.s3", expect_owner)
    return client


def _download(client: Any, bucket: str, key: str, dest: Path) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.download_file(bucket, key, str(dest))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise ArtifactError(f"cannot read s3://{bucket}/{key} ({code or exc}): check the URI and permissions") from exc
    except BotoCoreError as exc:  # endpoint unreachable, timeouts, retries exhausted
        raise ArtifactError(f"cannot read s3://{bucket}/{key}: the artifact store is unavailable ({exc})") from exc


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
