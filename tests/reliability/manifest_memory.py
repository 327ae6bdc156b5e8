"""Run the real S3 handler on one input object in a fresh process and report its peak memory.

    python -m tests.reliability.manifest_memory <bucket> <key>

The S3 API is the one named by ``AWS_ENDPOINT_URL_S3`` (a moto server in the parent process), and the model
comes from ``MAAS_MODELS``, so this process holds nothing but the handler, its model and what the job reads.
Prints one JSON object: RSS before the event, the peak above it (VmHWM), the job's summary counts.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _status_mb(field: str) -> float:
    match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


def main(bucket: str, key: str) -> None:
    import boto3

    import functions.handlers.s3 as s3_handler
    from maas_dev.local_aws import local_context, s3_put_event

    head = boto3.client("s3").head_object(Bucket=bucket, Key=key)
    event = s3_put_event(bucket, key, etag=head["ETag"], size=head["ContentLength"], version_id=head.get("VersionId"))
    before = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    response = s3_handler.handler(event, local_context())
    peak = _status_mb("VmHWM") - before
    print(json.dumps({"rss_before_mb": round(before, 1), "peak_mb": round(peak, 1), "jobs": response["jobs"]}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
