"""One local run of a chunked S3 job in its own process, for the scale, memory and kill tests.

    python -m tests.functional.chunked_run --endpoint http://127.0.0.1:PORT --key inputs/tiny-embed/big.jsonl \
        --out out.jsonl --report report.json [--execution local:x] [--workers 2]

The S3 API (a moto server) runs in another process and the test uploads the object, so this process's peak
memory (VmHWM, read before it downloads the output to disk) is maas's alone: the plan step, the Map's
bookkeeping and the merge; the pool's processes report theirs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

BUCKET = "maas-local"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--execution")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

    import boto3

    from maas_dev.batch_local import install_registry, run_chunked
    from maas_dev.local_aws import aws_endpoint
    from tests.batch_fakes import tiny_registry

    install_registry(tiny_registry)
    with aws_endpoint(args.endpoint):
        s3 = boto3.client("s3")
        before_kb = _vmhwm_kb()
        started = time.perf_counter()
        run = run_chunked(BUCKET, args.key, execution=args.execution, workers=args.workers,
                          registry_factory=tiny_registry)
        seconds = time.perf_counter() - started
        job_kb = _vmhwm_kb()  # the plan step, the Map's bookkeeping and the merge, before the harness downloads
        output = (run.summary or {}).get("output") or {}
        if args.out is not None and output.get("key"):
            s3.download_file(BUCKET, output["key"], str(args.out))
    args.report.write_text(json.dumps({
        "seconds": seconds, "plan": run.plan, "summary": run.summary, "processed": run.processed,
        "skipped": run.skipped, "attempts": run.attempts, "worker_peak_kb": run.worker_peak_kb,
        "parent_peak_kb": job_kb, "before_job_kb": before_kb,
    }))


def _vmhwm_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
