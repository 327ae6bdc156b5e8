"""Artifact integrity and the artifact store at cold start.

A corrupt or hostile artifact is refused with a named error before ONNX Runtime sees it; nothing is cached,
nothing is served, readiness says why. The runtime never unpickles. An artifact store that answers 503 or
does not answer at all makes the cold start fail after a bounded number of tries, with health not ready.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
from fastapi.testclient import TestClient
from moto import mock_aws

from functions.contract import FileEntry, Manifest, sha256_file
from functions.errors import ArtifactError, IntegrityError
from functions.inference.loader import UnsafeArtifactError
from functions.inference.registry import ModelRegistry
from functions.settings import Settings
from functions.web.app import create_app
from tests.reliability.support import assert_clean_error

EMBED = "minilm-embed"
onnx = pytest.importorskip("onnx")  # the build extra: only to craft hostile graphs


def copy_artifact(built_artifacts: dict[str, Path], tmp_path: Path) -> Path:
    target = tmp_path / EMBED
    shutil.copytree(built_artifacts[EMBED], target, symlinks=True)
    for extra in target.glob(".*"):
        extra.unlink()
    return target


def rehash(directory: Path) -> None:
    """Rewrite the manifest's hashes to match the files, as an attacker with write access would."""
    manifest = Manifest.read(directory)
    files = {
        name: FileEntry(sha256=sha256_file(directory / name), size_bytes=(directory / name).stat().st_size)
        for name in sorted(p.name for p in directory.iterdir() if p.name != "manifest.json")
    }
    manifest.model_copy(update={"files": files}).write(directory)


def load(uri: str, tmp_path: Path, **extra: Any) -> ModelRegistry:
    registry = ModelRegistry()
    registry.load(uri, Settings(models=uri, cache_dir=tmp_path / "cache", warmup=False), **extra)
    return registry


def hostile_graph(location: str, where: str = "initializer") -> Any:
    """A tiny graph whose weight lives in external data at ``location`` (in an initializer or an If branch)."""
    from onnx import TensorProto, helper

    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2, 2])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        weight.external_data.add(key=key, value=value)
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])
    if where == "initializer":
        graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "g", [x], [y], [weight])
    else:  # hidden in a subgraph: an If node's then-branch, as a Constant's tensor attribute
        branch = helper.make_graph([helper.make_node("Constant", [], ["Y"], value=weight)], "then", [], [y])
        cond = helper.make_tensor("C", TensorProto.BOOL, [], vals=[True])
        nodes = [helper.make_node("If", ["C"], ["Y"], then_branch=branch, else_branch=branch)]
        graph = helper.make_graph(nodes, "g", [x], [y], [cond])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def with_model(directory: Path, model: Any, extra_files: dict[str, bytes] | None = None) -> Path:
    onnx.save_model(model, str(directory / "model.onnx"))
    for name, data in (extra_files or {}).items():
        (directory / name).write_bytes(data)
    rehash(directory)
    return directory


CASES: dict[str, tuple[Callable[[Path], Any], type[ArtifactError], str]] = {
    "byte-flipped model.onnx": (
        lambda d: d.joinpath("model.onnx").write_bytes(_flip(d.joinpath("model.onnx").read_bytes())),
        IntegrityError, "artifact_integrity",
    ),
    "byte-flipped tokenizer.json": (
        lambda d: d.joinpath("tokenizer.json").write_bytes(_flip(d.joinpath("tokenizer.json").read_bytes())),
        IntegrityError, "artifact_integrity",
    ),
    "pickle file added": (lambda d: d.joinpath("extra.pkl").write_bytes(b"\x80\x04K\x01."), ArtifactError,
                          "artifact_invalid"),
    "torch .pt file added and listed": (
        lambda d: (d.joinpath("weights.pt").write_bytes(b"PK\x03\x04 torch zip"), rehash(d)), ArtifactError,
        "artifact_invalid",
    ),
    "external data ../ (relative)": (
        lambda d: with_model(d, hostile_graph("../secret.bin")), UnsafeArtifactError, "artifact_unsafe",
    ),
    "external data absolute path": (
        lambda d: with_model(d, hostile_graph("/etc/passwd")), UnsafeArtifactError, "artifact_unsafe",
    ),
    "external data in a subfolder": (
        lambda d: with_model(d, hostile_graph("sub/w.bin")), UnsafeArtifactError, "artifact_unsafe",
    ),
    "external data ../ inside an If subgraph": (
        lambda d: with_model(d, hostile_graph("../../x.bin", where="subgraph")), UnsafeArtifactError,
        "artifact_unsafe",
    ),
    "external data file not in the manifest": (
        lambda d: (with_model(d, hostile_graph("w.data"), {"w.data": b"\0" * 16}), _unlist(d, "w.data")),
        UnsafeArtifactError, "artifact_unsafe",
    ),
    "symlinked tokenizer.json": (lambda d: _symlink(d, "tokenizer.json"), UnsafeArtifactError, "artifact_unsafe"),
}  # fmt: skip


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def _unlist(directory: Path, name: str) -> None:
    manifest = Manifest.read(directory)
    files = {k: v for k, v in manifest.files.items() if k != name}
    manifest.model_copy(update={"files": files}).write(directory)


def _symlink(directory: Path, name: str) -> None:
    outside = directory.parent / f"outside-{name}"
    shutil.move(directory / name, outside)
    (directory / name).symlink_to(outside)


@pytest.mark.parametrize("case", list(CASES))
def test_a_corrupt_or_hostile_local_artifact_is_refused_and_not_served(built_artifacts, tmp_path, record, case):
    mutate, error, code = CASES[case]
    directory = copy_artifact(built_artifacts, tmp_path)
    mutate(directory)
    from functions.inference.loader import verify_artifact

    with pytest.raises(error) as raised:
        verify_artifact(directory)
    assert raised.value.code == code
    registry = load(str(directory), tmp_path)
    assert not registry.ready and registry.names() == [] and list(registry.failures) == [str(directory)]
    with TestClient(create_app(registry, Settings())) as client:
        assert client.get("/v2/health/ready").status_code == 503
        assert_clean_error(client.post(f"/models/{EMBED}/predict", json={"inputs": "x"}), 503)
    record("integrity", case, {"refused": True, "error": type(raised.value).__name__, "code": code, "served": False})


# (an unlisted file in the bucket is never downloaded: only the manifest's files are fetched)
@pytest.mark.parametrize(
    "case", ["byte-flipped model.onnx", "external data ../ (relative)", "torch .pt file added and listed"]
)
def test_a_hostile_artifact_in_s3_is_refused_and_nothing_is_cached(built_artifacts, tmp_path, record, case):
    mutate, _, code = CASES[case]
    directory = copy_artifact(built_artifacts, tmp_path / "src")
    mutate(directory)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="maas-artifacts")
        for path in directory.iterdir():
            s3.put_object(Bucket="maas-artifacts", Key=f"models/{EMBED}/v1/{path.name}", Body=path.read_bytes())
        registry = load(f"s3://maas-artifacts/models/{EMBED}/v1", tmp_path, s3_client=s3)
    assert not registry.ready
    cache = tmp_path / "cache"
    leftovers = [p for p in cache.rglob("*")] if cache.exists() else []
    assert leftovers == [], leftovers  # no verified copy, no staging directory
    record(
        "integrity",
        f"{case} (from S3)",
        {"refused": True, "code": code, "cached_files": len(leftovers), "served": False},
    )


def test_the_runtime_never_unpickles(built_artifacts):
    # GIVEN a fresh interpreter that audits every unpickling of a global (the way pickle runs code)
    script = f"""
import sys, pickle, numpy
events = []
sys.addaudithook(lambda event, args: events.append(event) if event == "pickle.find_class" else None)
for name in ("load", "loads"):
    setattr(pickle, name, lambda *a, **k: events.append("pickle." + name))
from fastapi.testclient import TestClient
from functions.web.app import create_app
from functions.inference.registry import registry_from_settings
from functions.settings import Settings
registry = registry_from_settings(Settings(models="{built_artifacts[EMBED]},{built_artifacts["intent-classifier"]}"))
client = TestClient(create_app(registry))
assert client.post("/models/{EMBED}/predict", json={{"inputs": ["a", "b"]}}).status_code == 200
assert client.post("/models/intent-classifier/predict", json={{"inputs": "hi"}}).status_code == 200
print("EVENTS", events, "TORCH", "torch" in sys.modules)
"""
    # WHEN it loads both models and serves a request each
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    # THEN nothing was unpickled and torch was never imported
    assert "EVENTS [] TORCH False" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]


def test_runtime_sources_contain_no_unpickling_calls():
    runtime = Path(__file__).resolve().parents[2] / "functions"
    forbidden = ("pickle.load", "torch.load", "joblib.load", "allow_pickle=True", "dill.", "cloudpickle")
    hits = [
        f"{path.relative_to(runtime)}: {word}"
        for path in runtime.rglob("*.py")
        for word in forbidden
        if word in path.read_text(encoding="utf-8")
    ]
    assert hits == []


# --- the artifact store at cold start ------------------------------------------------------------------------
class _FaultyStore(BaseHTTPRequestHandler):
    """An S3 endpoint that answers every request 503 SlowDown (and counts them)."""

    requests: ClassVar[list[str]] = []

    def _answer(self) -> None:
        type(self).requests.append(f"{self.command} {self.path}")
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body) if self.command != "HEAD" else 0))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def faulty_store(monkeypatch) -> Iterator[str]:
    _FaultyStore.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FaultyStore)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("fault", ["503 SlowDown", "connection refused"])
def test_an_unavailable_artifact_store_fails_the_cold_start_clearly(faulty_store, monkeypatch, tmp_path, record, fault):
    from maas_dev.server import free_port

    endpoint = faulty_store if fault == "503 SlowDown" else f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    uri = f"s3://maas-artifacts/models/{EMBED}/v1"
    # WHEN the process starts (the Lambda init phase) and the store does not deliver
    started = time.perf_counter()
    registry = load(uri, tmp_path)
    seconds = time.perf_counter() - started
    # THEN loading stops after a bounded number of tries, with a clear message
    attempts = len(_FaultyStore.requests) if fault == "503 SlowDown" else None
    message = registry.failures[uri]
    assert "artifact store is unavailable" in message or "SlowDown" in message or "503" in message, message
    assert seconds < 30 and (attempts is None or 1 <= attempts <= 3), (seconds, attempts)
    # AND health says not ready, requests get 503 in their protocol's shape
    with TestClient(create_app(registry, Settings())) as client:
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert_clean_error(client.post(f"/models/{EMBED}/predict", json={"inputs": "x"}), 503)
        assert_clean_error(client.post("/v1/embeddings", json={"model": EMBED, "input": "x"}), 503)
    assert not any((tmp_path / "cache").rglob("*.onnx"))
    record("faults", f"artifact store {fault} at cold start",
           {"attempts": attempts, "seconds": round(seconds, 2), "ready": False, "health_status": 503,
            "request_status": 503}, json.dumps(message[:160]))  # fmt: skip


def test_a_graph_onnx_runtime_rejects_is_a_load_failure_not_a_crash(built_artifacts, tmp_path, record):
    # GIVEN an artifact whose hashes match but whose graph ONNX Runtime cannot load (an unknown op domain)
    from onnx import TensorProto, helper

    directory = copy_artifact(built_artifacts, tmp_path)
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["X"], ["Y"], domain="evil.domain")], "g", [x], [y])
    with_model(directory, helper.make_model(graph))
    # WHEN the process loads it
    codes: list[dict[str, str]] = []
    try:
        registry = load(str(directory), tmp_path)
        outcome = "load failure reported" if not registry.ready and registry.failures else "loaded"
        codes, served = registry.failure_summary(), registry.names()
    except Exception as exc:  # the process would die at init, taking every other model with it
        outcome, served = f"crash: {type(exc).__name__} escapes ModelRegistry.load", []
    refused = outcome == "load failure reported"
    record("integrity", "graph ONNX Runtime refuses (hashes match)",
           {"refused": refused, "outcome": outcome, "code": codes[0]["code"] if codes else None,
            "served": bool(served)},
           "session-creation errors become an ArtifactError: reported as not ready, other models keep serving")
    assert refused and codes == [{"code": "artifact_invalid"}] and not served


def test_readiness_does_not_reveal_local_paths(tmp_path, record):
    secret = tmp_path / "private-dir" / "model-x"
    registry = load(str(secret), tmp_path)
    with TestClient(create_app(registry, Settings())) as client:
        body = client.get("/v2/health/ready").text
    leaks = str(tmp_path) in body
    record("access", "readiness body reveals local artifact paths", {"leaks": leaks},
           "load failures are logged with their paths; /v2/health/ready answers only a code per failure")
    assert not leaks and "private-dir" not in body
