"""Run the event handlers end to end against a real S3/SQS API: moto in server mode on 127.0.0.1.

The deployed code path, unchanged: boto3 clients speak HTTP to the endpoint named by
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL_SQS`` (set here, with throwaway credentials, for the
duration of a run), the handler is ``functions.handlers.s3.handler`` or ``…sqs.handler``, and the
event is the real notification shape built from the uploaded object's metadata.

    python -m maas_dev.local_aws s3 data.jsonl --model minilm-embed --out results.jsonl
    python -m maas_dev.local_aws sqs events/sqs_batch.json

Models come from ``MAAS_MODELS`` (as for ``maas invoke``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from functions.batch.replies import ReplyAllowList, S3Destination
from functions.batch.s3io import clear_clients
from functions.context import DeadlineContext
from functions.settings import get_settings

LOCAL_BUCKET = "maas-local"
# The object that events/s3_put.json announces (its eTag is this content's MD5): upload it to
# s3://maas-local/inputs/minilm-embed/sample sentences.jsonl to replay that event.
SAMPLE_KEY = "inputs/minilm-embed/sample sentences.jsonl"
SAMPLE_JSONL = (
    b'{"id": "s1", "inputs": "A man is eating food."}\n'
    b'{"id": "s2", "inputs": "A man is riding a horse."}\n'
    b'{"id": "s3", "inputs": 42}\n'
)
_REGION = "us-east-1"
_ACCOUNT = "123456789012"


def local_context(timeout_s: float = 300) -> DeadlineContext:
    """The context a batch function gets as deployed (its ``batch_timeout_s`` defaults to 300 s)."""
    return DeadlineContext(timeout_s, function_name="maas-local")


def s3_put_event(bucket: str, key: str, *, etag: str, size: int, version_id: str | None = None,
                 sequencer: str | None = None) -> dict[str, Any]:
    """An ``ObjectCreated:Put`` notification as S3 sends it (key URL-encoded, as S3 does)."""
    from urllib.parse import quote_plus

    obj: dict[str, Any] = {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag.strip('"'),
                           "sequencer": sequencer or f"{int(datetime.now(UTC).timestamp() * 1e6):018X}"}
    if version_id and version_id != "null":
        obj["versionId"] = version_id
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": _REGION,
        "eventTime": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAINPONIXQXHT3IKHL2"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": uuid.uuid4().hex[:16].upper(), "x-amz-id-2": "local"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "maas-batch-inputs",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3I5XTEXAMAI3E"},
                          "arn": f"arn:aws:s3:::{bucket}"},
               "object": obj},
    }]}


def sqs_event(bodies: list[str], *, queue: str = "maas-requests", receive_count: int = 1) -> dict[str, Any]:
    """An SQS → Lambda event with one record per body (message ids are fresh UUIDs)."""
    suffix = ".fifo" if queue.endswith(".fifo") else ""
    records = []
    for body in bodies:
        attributes = {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "1545082649183",
                      "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1545082649185"}
        if suffix:
            attributes.update(MessageGroupId="g1", MessageDeduplicationId=uuid.uuid4().hex)
        records.append({
            "messageId": str(uuid.uuid4()), "receiptHandle": "AQEB" + uuid.uuid4().hex, "body": body,
            "attributes": attributes, "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
            "eventSourceARN": f"arn:aws:sqs:{_REGION}:{_ACCOUNT}:{queue}", "awsRegion": _REGION,
        })
    return {"Records": records}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    """Start moto's S3/SQS/DynamoDB API on 127.0.0.1:<free port>; yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextmanager
def aws_endpoint(endpoint_url: str) -> Iterator[None]:
    """Point every boto3 client created inside at ``endpoint_url``, with throwaway credentials."""
    overrides = {
        "AWS_ENDPOINT_URL_S3": endpoint_url, "AWS_ENDPOINT_URL_SQS": endpoint_url,
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint_url, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_SESSION_TOKEN": "local", "AWS_DEFAULT_REGION": _REGION,
    }
    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    clear_clients()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        clear_clients()


@dataclass
class LocalS3Result:
    response: dict[str, Any]
    summary: dict[str, Any]
    output_key: str | None
    output_path: Path | None
    output_etag: str | None  # "<md5>-<parts>" when the output was a multipart upload


def run_s3_job(
    input_path: Path, *, model: str, name: str | None = None, bucket: str = LOCAL_BUCKET,
    endpoint_url: str | None = None, out: Path | None = None,
) -> LocalS3Result:
    """Upload ``input_path`` as ``<input prefix><model>/<name>`` and run the real S3 handler on it.

    Starts (and stops) a moto server unless ``endpoint_url`` names a running one. The output is
    downloaded to ``out`` when given.
    """
    from functions.handlers import s3 as s3_handler

    settings = get_settings()
    per_model_prefix = settings.input_prefix.rstrip("/").rsplit("/", 1)[-1] == model  # inputs/<model>/
    name = name or input_path.name
    relative = name if per_model_prefix else f"{model}/{name}"
    key = settings.input_prefix + relative
    server = moto_server() if endpoint_url is None else nullcontext(endpoint_url)
    with server as url, aws_endpoint(url):
        client = boto3.client("s3")
        _ensure_bucket(client, bucket)
        client.upload_file(str(input_path), bucket, key)
        head = client.head_object(Bucket=bucket, Key=key)
        event = s3_put_event(bucket, key, etag=head["ETag"], size=head["ContentLength"],
                             version_id=head.get("VersionId"))
        response = s3_handler.handler(event, local_context())
        summary_key = f"{settings.output_prefix}{relative}.summary.json"
        summary = json.loads(client.get_object(Bucket=bucket, Key=summary_key)["Body"].read())
        output_key = (summary.get("output") or {}).get("key")
        etag = client.head_object(Bucket=bucket, Key=output_key)["ETag"].strip('"') if output_key else None
        if out is not None and output_key:
            client.download_file(bucket, output_key, str(out))
    return LocalS3Result(response, summary, output_key, out if output_key else None, etag)


def run_sqs_event(event: dict[str, Any], *, endpoint_url: str | None = None) -> dict[str, Any]:
    """Run the real SQS handler on ``event``; buckets of allow-listed s3:// destinations are created first.

    Returns the handler's partial batch response plus ``replies``: the result objects written.
    """
    from functions.handlers import sqs as sqs_handler

    allowed = [e for e in ReplyAllowList.parse(get_settings().reply_allowlist).entries
               if isinstance(e, S3Destination)]
    server = moto_server() if endpoint_url is None else nullcontext(endpoint_url)
    with server as url, aws_endpoint(url):
        client = boto3.client("s3")
        for entry in allowed:
            _ensure_bucket(client, entry.bucket)
        response: dict[str, Any] = dict(sqs_handler.handler(event, local_context()))
        replies = [f"s3://{e.bucket}/{obj['Key']}" for e in allowed
                   for obj in client.list_objects_v2(Bucket=e.bucket, Prefix=e.prefix).get("Contents", [])]
    return {**response, "replies": replies}


def _ensure_bucket(client: Any, bucket: str) -> None:
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m maas_dev.local_aws", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="source", required=True)
    s3 = sub.add_parser("s3", help="run an S3 batch job on a local file")
    s3.add_argument("file", type=Path)
    s3.add_argument("--model", required=True)
    s3.add_argument("--out", type=Path)
    s3.add_argument("--endpoint-url", help="a running S3 API (default: start a moto server)")
    sqs = sub.add_parser("sqs", help="run the SQS handler on an event file")
    sqs.add_argument("event", type=Path)
    sqs.add_argument("--endpoint-url")
    args = parser.parse_args(argv)
    if args.source == "s3":
        result = run_s3_job(args.file, model=args.model, out=args.out, endpoint_url=args.endpoint_url)
        print(json.dumps(result.summary, indent=2))
    else:
        print(json.dumps(run_sqs_event(json.loads(args.event.read_text()), endpoint_url=args.endpoint_url), indent=2))


if __name__ == "__main__":
    main()
