"""Access: API keys on the HTTP app, `maas serve` bind check, allow-listed destinations, bucket owner.

OWASP API 2023: API2 (broken authentication) and API7 (SSRF: a caller-supplied location is only ever
used when configuration allows it — and refused before any S3 or SQS call is made).
"""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from moto import mock_aws

from functions.batch.s3io import clear_clients, s3_client, sqs_client
from functions.settings import get_settings
from maas_dev.local_aws import local_context, sqs_event
from tests.reliability.support import assert_clean_error

KEYS = ("k-3f9a2c1e7d", "second-key-88")
EMBED = "minilm-embed"


@pytest.fixture(scope="module")
def keyed_client(registry):
    from fastapi.testclient import TestClient

    from functions.settings import Settings
    from functions.web.app import create_app

    settings = Settings(api_keys=",".join(KEYS))
    with TestClient(create_app(registry, settings), raise_server_exceptions=False) as client:
        yield client


CALLS = [
    ("post", f"/models/{EMBED}/predict", {"inputs": ["hi"]}),
    ("post", "/v1/embeddings", {"model": EMBED, "input": "hi"}),
    (
        "post",
        f"/v2/models/{EMBED}/infer",
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]},
    ),
    ("get", "/models", None),
    ("get", "/v1/models", None),
    ("get", f"/v2/models/{EMBED}", None),
    ("get", "/openapi.json", None),
]
BAD_KEYS = [None, "", "wrong", KEYS[0][:-1], KEYS[0] + "x", KEYS[0].upper(), f"{KEYS[0]},{KEYS[1]}", " " + KEYS[0]]


def test_every_route_but_health_needs_a_valid_key(keyed_client, record):
    refused = 0
    for method, path, body in CALLS:
        for bad in BAD_KEYS:
            headers = {} if bad is None else {"x-api-key": bad}
            response = keyed_client.request(method, path, json=body, headers=headers)
            if path.startswith(("/models", "/v1", "/v2")):
                assert_clean_error(response, 401)
            assert response.status_code == 401 and "x-api-key" in response.headers["www-authenticate"]
            refused += 1
        for key in KEYS:
            assert keyed_client.request(method, path, json=body, headers={"x-api-key": key}).status_code == 200
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert keyed_client.get(path).status_code == 200
    record(
        "access",
        "requests without a valid x-api-key refused",
        {"refused": refused, "of": refused, "status": 401},
        f"{len(CALLS)} routes x {len(BAD_KEYS)} bad keys (missing, empty, prefix, suffix, case, list, space)",
    )
    record("access", "requests with a valid key served", {"served": len(CALLS) * len(KEYS), "keys": len(KEYS)})


def test_keys_are_compared_in_constant_time_against_every_key(keyed_client, monkeypatch):
    import functions.web.security as security

    compared: list[bytes] = []
    original = security.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return original(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    keyed_client.get("/v1/models", headers={"x-api-key": KEYS[0]})
    assert compared == [k.encode() for k in KEYS]  # no early exit on the first match


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("127.0.0.1.nip.io", False),
        ("", False),
    ],
)
def test_loopback_detection(host, loopback):
    from functions.web.security import is_loopback

    assert is_loopback(host) is loopback


@pytest.fixture
def cli(monkeypatch, built_artifacts):
    from typer.testing import CliRunner

    import maas_dev.server as server
    from functions.settings import get_settings
    from maas_dev.cli import app

    started: list[tuple[str, int]] = []
    monkeypatch.setattr(server, "serve", lambda registry, host, port: started.append((host, port)))
    monkeypatch.delenv("MAAS_API_KEYS", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args: str, keys: str | None = None) -> Any:
        if keys is not None:
            monkeypatch.setenv("MAAS_API_KEYS", keys)
        get_settings.cache_clear()
        return runner.invoke(app, ["serve", str(built_artifacts[EMBED]), *args])

    yield SimpleNamespace(run=run, started=started)
    get_settings.cache_clear()


def test_serve_refuses_to_listen_beyond_loopback_without_keys(cli, record):
    refused = cli.run("--host", "0.0.0.0", "--port", "8999")
    assert refused.exit_code == 2 and "MAAS_API_KEYS" in refused.output and cli.started == []
    assert cli.run("--host", "192.168.1.20", keys=" , ").exit_code == 2  # blank keys are no keys
    assert cli.started == []
    assert cli.run("--host", "0.0.0.0", "--port", "8999", keys="k1").exit_code == 0
    assert cli.run("--host", "127.0.0.1", "--port", "8998", keys="").exit_code == 0
    assert cli.started == [("0.0.0.0", 8999), ("127.0.0.1", 8998)]
    record("access", "maas serve --host 0.0.0.0 without MAAS_API_KEYS", {"exit_code": 2, "listened": False})


# --- SQS reply_to: allow-listed destinations only, refused with zero S3/SQS calls --------------------------
RESULTS = "maas-results"
ALLOWED_S3 = f"s3://{RESULTS}/replies/"
ALLOWED_QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/maas-replies"
OWNER = "123456789012"

HOSTILE_REPLY_TO = [
    "s3://attacker-bucket/replies/",  # another bucket
    f"s3://{RESULTS}/other/",  # outside the allowed prefix
    f"s3://{RESULTS}/replies-evil/",  # prefix match on a partial segment
    f"s3://{RESULTS}/replies/../secrets/",  # traversal
    f"s3://{RESULTS}/replies/./../x/",
    f"s3://{RESULTS}/",  # the bucket root
    f"s3://{RESULTS.upper()}/replies/",
    f"s3://{RESULTS}.attacker.com/replies/",
    f"s3://{RESULTS}:443/replies/",
    "s3://arn:aws:s3:us-east-1:999999999999:accesspoint/ap/replies/",
    "https://sqs.us-east-1.amazonaws.com/999999999999/maas-replies",  # another account's queue
    "https://sqs.us-east-1.amazonaws.com/123456789012/maas-replies-2",
    "https://sqs.us-east-1.amazonaws.com.attacker.com/123456789012/maas-replies",
    "http://sqs.us-east-1.amazonaws.com/123456789012/maas-replies",  # plain http
    "https://user@sqs.us-east-1.amazonaws.com/123456789012/maas-replies/../x",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",  # instance metadata (SSRF)
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://127.0.0.1:9000/123456789012/maas-replies",  # loopback, not on the list
    "file:///etc/passwd",
    "ftp://example.com/x",
    "//attacker.example/replies/",
    "",
    "s3://",
    f"s3://{RESULTS}/replies/\x00/",  # NUL
    f"s3://{RESULTS}\u2215replies/",  # division slash instead of '/'
    "s3://maas-rеsults/replies/",  # Cyrillic 'е' homoglyph bucket
    f"s3://{RESULTS}/replies\\..\\secrets/",
    ["s3://not-a-string/"],
    {"bucket": RESULTS},
]


# Odd but contained: S3 keys are literal (no normalisation), so these stay under the allowed prefix.
CONTAINED_REPLY_TO = [
    f"s3://{RESULTS}//replies/",
    f"s3://{RESULTS}/replies/\u202e/",  # right-to-left override
    f"s3://{RESULTS}/replies/\u2025/",  # two-dot leader, not '..'
    f"s3://{RESULTS}/replies/．．/",  # fullwidth full stops, not '..'
    f"s3://{RESULTS}/replies/%2e%2e/",  # percent-encoding is not decoded in S3 keys
]


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("MAAS_BATCH_BUCKET", "maas-batch")
    monkeypatch.setenv("MAAS_REPLY_ALLOWLIST", f"{ALLOWED_S3},{ALLOWED_QUEUE}")
    monkeypatch.setenv("MAAS_EXPECTED_BUCKET_OWNER", OWNER)
    monkeypatch.delenv("MAAS_IDEMPOTENCY_TABLE", raising=False)
    get_settings.cache_clear()
    with mock_aws():
        clear_clients()
        s3 = boto3.client("s3", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        for bucket in ("maas-batch", RESULTS):
            s3.create_bucket(Bucket=bucket)
        sqs.create_queue(QueueName="maas-replies")
        calls: list[tuple[str, str, dict[str, Any]]] = []
        for service, client in (("s3", s3_client(OWNER)), ("sqs", sqs_client())):
            client.meta.events.register(
                f"provide-client-params.{service}",  # after the owner hook: sees the parameters as sent
                lambda params, model, service=service, **_: calls.append((service, model.name, dict(params))),
            )
        yield SimpleNamespace(s3=s3, sqs=sqs, calls=calls)
    clear_clients()
    get_settings.cache_clear()


@pytest.fixture
def sqs_handler(monkeypatch, registry):
    import functions.handlers.sqs as module

    monkeypatch.setattr(module, "get_registry", lambda: registry)
    return module.handler


def body(rid: str, reply_to: Any) -> str:
    return json.dumps({"id": rid, "model": EMBED, "inputs": ["hello"], "reply_to": reply_to})


def test_hostile_reply_to_destinations_are_refused_with_zero_aws_calls(aws, sqs_handler, record):
    # GIVEN a batch in which every message names a destination outside the allow-list
    event = sqs_event([body(f"h{i}", uri) for i, uri in enumerate(HOSTILE_REPLY_TO)])
    # WHEN it is handled THEN every message fails (all-failed batch: the invocation raises)...
    with pytest.raises(BatchProcessingError) as raised:
        sqs_handler(event, local_context())
    assert len(raised.value.child_exceptions) == len(HOSTILE_REPLY_TO)
    kinds = Counter(type(e[1]).__name__ for e in raised.value.child_exceptions)
    assert set(kinds) <= {"ReplyRefusedError", "PoisonMessageError"}, kinds  # non-strings fail the schema
    # ...and not one S3 or SQS call was made
    assert aws.calls == []
    record(
        "access",
        "hostile reply_to URIs refused",
        {"refused": len(HOSTILE_REPLY_TO), "of": len(HOSTILE_REPLY_TO), "s3_calls": 0, "sqs_calls": 0},
        "other buckets/accounts, '..', metadata endpoint 169.254.169.254, schemes, NUL, homoglyphs, odd unicode",
    )


def test_odd_unicode_destinations_stay_inside_the_allowed_prefix(aws, sqs_handler, record):
    event = sqs_event([body(f"u{i}", uri) for i, uri in enumerate(CONTAINED_REPLY_TO)])
    assert sqs_handler(event, local_context()) == {"batchItemFailures": []}
    written = [p["Key"] for service, name, p in aws.calls if name == "PutObject" and p["Bucket"] == RESULTS]
    assert len(written) == len(CONTAINED_REPLY_TO) and all(key.startswith("replies/") for key in written), written
    record(
        "access",
        "odd-unicode reply_to kept inside the allowed prefix",
        {"uris": len(CONTAINED_REPLY_TO), "writes_outside": 0},
    )


def test_a_reply_to_that_breaks_url_parsing_fails_alone(aws, sqs_handler, record):
    # GIVEN one good message and one whose reply_to makes urllib raise ValueError (NFKC-unsafe netloc)
    event = sqs_event([body("good", ALLOWED_S3), body("bad", f"s3://{RESULTS}\uff0freplies/")])
    ids = [r["messageId"] for r in event["Records"]]
    # WHEN the batch is handled
    try:
        response: Any = sqs_handler(event, local_context())
    except Exception as exc:  # the whole batch failed: the good message goes back to the queue too
        response = {"raised": type(exc).__name__}
    fails_alone = response == {"batchItemFailures": [{"itemIdentifier": ids[1]}]}
    record(
        "access",
        "reply_to with a fullwidth solidus in the bucket (urllib ValueError)",
        {"fails_alone": fails_alone, "response": response},
        "urlparse's ValueError is a ReplyRefusedError: the message fails alone",
    )
    assert fails_alone, response


def test_allowed_destinations_work_and_every_s3_call_names_the_bucket_owner(aws, sqs_handler, record):
    event = sqs_event([body("ok-s3", ALLOWED_S3 + "sub/"), body("ok-queue", ALLOWED_QUEUE), body("bad", "s3://x1y/")])
    response = sqs_handler(event, local_context())
    assert len(response["batchItemFailures"]) == 1
    s3_calls = [(name, params) for service, name, params in aws.calls if service == "s3"]
    assert any(name == "PutObject" and params["Key"] == "replies/sub/ok-s3.json" for name, params in s3_calls)
    assert s3_calls and all(params.get("ExpectedBucketOwner") == OWNER for _, params in s3_calls), s3_calls
    record(
        "access",
        "ExpectedBucketOwner on S3 calls (SQS replies + dedupe store)",
        {"s3_calls": len(s3_calls), "with_owner": len(s3_calls)},
    )


def test_s3_events_for_other_buckets_or_prefixes_make_no_calls(aws, monkeypatch, registry, record):
    import functions.handlers.s3 as module
    from maas_dev.local_aws import s3_put_event

    monkeypatch.setattr(module, "get_registry", lambda: registry)
    events = [
        s3_put_event("attacker-bucket", f"inputs/{EMBED}/x.jsonl", etag="e", size=10),
        s3_put_event("maas-batch", f"outputs/{EMBED}/x.jsonl", etag="e", size=10),
        s3_put_event("maas-batch", f"inputs/{EMBED}/", etag="e", size=0),
        s3_put_event("maas-batch", "inputs/no-folder.jsonl", etag="e", size=10),
    ]
    for event in events:
        assert module.handler(event, local_context()) == {"jobs": []}
    assert aws.calls == []
    record("access", "S3 events outside the batch bucket/input prefix", {"ignored": len(events), "s3_calls": 0})
    # a key that looks like a traversal is a literal S3 key: whatever it leads to is written under outputs/ only
    module.handler(s3_put_event("maas-batch", "inputs/../outputs/x.jsonl", etag="e", size=10), local_context())
    writes = [p["Key"] for _, name, p in aws.calls if name in ("PutObject", "CreateMultipartUpload")]
    assert writes and all(key.startswith("outputs/") for key in writes), writes


def test_image_manifest_lines_cannot_name_objects_outside_their_folder(aws, monkeypatch, registry, record):
    import functions.handlers.s3 as module
    from maas_dev.local_aws import s3_put_event

    monkeypatch.setattr(module, "get_registry", lambda: registry)
    aws.s3.put_object(Bucket="maas-batch", Key="secrets/key.png", Body=b"\x89PNG\r\n\x1a\nsecret")
    lines = [
        {"id": i, "image": ref}
        for i, ref in enumerate(
            [
                "../../secrets/key.png",
                "inputs/other-model/a.png",
                "/secrets/key.png",
                f"inputs/{EMBED}/../../secrets/key.png",
                "s3://maas-batch/secrets/key.png",
            ]
        )
    ]
    key = f"inputs/{EMBED}/manifest.images.jsonl"
    payload = "\n".join(json.dumps(line) for line in lines).encode() + b"\n"
    aws.s3.put_object(Bucket="maas-batch", Key=key, Body=payload)
    head = aws.s3.head_object(Bucket="maas-batch", Key=key)
    aws.calls.clear()
    module.handler(s3_put_event("maas-batch", key, etag=head["ETag"], size=len(payload)), local_context())
    read_keys = [p.get("Key") for s, name, p in aws.calls if name in ("GetObject", "HeadObject")]
    assert "secrets/key.png" not in read_keys, read_keys  # keys are literal: only the model's folder is read
    assert all(k.startswith((f"inputs/{EMBED}/", "outputs/")) for k in read_keys), read_keys
    record(
        "access",
        "image manifest lines naming objects outside the model's input folder",
        {"lines": len(lines), "secret_reads": 0},
    )
