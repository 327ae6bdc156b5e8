"""How big an S3 batch job is, where it runs, how it is cut and what it costs: one estimate for infra (the
EventBridge routing threshold, the chunk size the state machine's plan step uses), the runtime and
``maas batch --plan``.

The rate is a per-model figure the bench records (``maas bench <model>`` writes ``batch_throughput`` into
``docs/benchmarks/<model>.json``: records/s of the real S3 job and the mean JSONL line of each record set).
Time on an input grows with its bytes (tokens), not with a record count, so the rate used here is in bytes/s:
the slowest set's records/s x its mean line bytes. Models without a bench get their task's documented
default (:data:`DEFAULT_RATES`). The bench ran on ``vcpus`` CPUs; a Lambda function gets
``memory_mb / 1769`` vCPUs (AWS: 1,769 MB = 1 vCPU), and the rate is scaled by that ratio, never up.

- **Route**: an object whose expected time is at most ``ROUTE_MARGIN`` of the batch function's timeout goes to
  that function (one invocation, as before); a larger one starts the Distributed Map state machine.
- **Chunks**: the plan step closes a chunk at the first window boundary (``max_batch x window_batches``
  records, so windows line up with a direct run's) once it holds ``chunk_bytes`` of input, sized to
  ``CHUNK_MARGIN`` of the chunk function's timeout at the same rate.
- **Cost**: Lambda GB-seconds (plan scan + chunks + merge) and requests, Step Functions state transitions, at
  the list prices below (us-east-1; ``PRICES`` says the date).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from functions.contract.tasks import Task

LAMBDA_MB_PER_VCPU = 1769  # AWS: a function with 1,769 MB has the equivalent of one vCPU
LAMBDA_MAX_VCPUS = 6
ROUTE_MARGIN = 0.5  # direct when the expected time is at most half the function's timeout
CHUNK_MARGIN = 0.5  # a chunk is sized to half the chunk function's timeout
MAX_CHUNKS = 5_000  # the merge copies each chunk in at most two parts; S3 allows 10,000 per upload
MIN_CHUNK_BYTES = 1024  # (a slow model's chunk is small; a chunk holds at least one window of records anyway)
DEFAULT_MAP_CONCURRENCY = 10  # the stage's batch_map_concurrency unless it says otherwise
# The plan step reads the whole object once (one GET stream); the merge copies chunk outputs server-side
# (UploadPartCopy, a few at a time), roughly a fixed cost per chunk.
PLAN_SCAN_BYTES_PER_S = 60 * 1024 * 1024
MERGE_S_PER_CHUNK = 0.5  # a copy of a few hundred MB (minilm-embed: ~400 MB of embeddings), 16 at a time
# EventBridge compares numbers in [-5e9, 5e9]: an object above that size matches neither size rule.
EVENTBRIDGE_NUMERIC_MAX = 5_000_000_000


class Prices(BaseModel):
    """On-demand list prices, us-east-1 (checked 2026-11)."""

    model_config = ConfigDict(frozen=True)

    lambda_gb_s: dict[str, float] = {"arm64": 0.0000133334, "x86_64": 0.0000166667}
    lambda_request: float = 0.20 / 1_000_000
    sfn_transition: float = 0.025 / 1_000  # standard workflows (the Map's child executions are standard too)


PRICES = Prices()


class BatchRate(BaseModel):
    """Throughput of the S3 job path for one model, as measured on ``vcpus`` CPUs."""

    model_config = ConfigDict(frozen=True)

    records_per_s: float = Field(gt=0)
    bytes_per_record: float = Field(gt=0, description="mean JSONL line (with its newline) of the measured set")
    vcpus: float = Field(gt=0)
    source: str = Field(description="where the figure comes from: a benchmark file, or 'default for <task>'")

    @property
    def bytes_per_s(self) -> float:
        return self.records_per_s * self.bytes_per_record

    def on_lambda(self, memory_mb: int) -> BatchRate:
        """The same rate on a Lambda function of ``memory_mb``: scaled by its vCPUs, never above the bench's."""
        vcpus = min(memory_mb / LAMBDA_MB_PER_VCPU, LAMBDA_MAX_VCPUS)
        factor = min(vcpus, self.vcpus) / self.vcpus
        return self.model_copy(update={"records_per_s": self.records_per_s * factor, "vcpus": vcpus})


# Until `maas bench <model>` records a rate: per task, on 2 vCPUs, deliberately below what the committed benches
# of the same kind of model show (minilm-embed's S3 job: 660 short records/s; smollm2-chat: ~55 tokens/s).
DEFAULT_RATES: dict[Task, BatchRate] = {
    Task.SENTENCE_EMBEDDINGS: BatchRate(records_per_s=300, bytes_per_record=100, vcpus=2, source="default"),
    Task.TEXT_CLASSIFICATION: BatchRate(records_per_s=300, bytes_per_record=100, vcpus=2, source="default"),
    Task.IMAGE_CLASSIFICATION: BatchRate(records_per_s=20, bytes_per_record=60, vcpus=2, source="default"),
    Task.TRANSLATION: BatchRate(records_per_s=4, bytes_per_record=100, vcpus=2, source="default"),
    Task.TEXT_GENERATION: BatchRate(records_per_s=0.5, bytes_per_record=100, vcpus=2, source="default"),
}


def default_rate(task: Task | str) -> BatchRate:
    rate = DEFAULT_RATES[Task(task)]
    return rate.model_copy(update={"source": f"default for {Task(task).value}"})


def rate_from_benchmark(report: dict[str, object], source: str) -> BatchRate | None:
    """The slowest record set (in bytes/s) of a bench report's ``batch_throughput``; None without one."""
    throughput = report.get("batch_throughput")
    machine = report.get("machine")
    if not isinstance(throughput, dict) or not isinstance(throughput.get("sets"), dict):
        return None
    vcpus = float(machine.get("cpus_used", 2)) if isinstance(machine, dict) else 2.0
    rates = []
    for name, measured in throughput["sets"].items():
        records_per_s = measured.get("records_per_s", {}).get("s3_job")
        line_bytes = measured.get("mean_line_bytes")
        if records_per_s and line_bytes:
            rates.append(BatchRate(records_per_s=records_per_s, bytes_per_record=line_bytes, vcpus=vcpus,
                                   source=f"{source} ({name} set, S3 job)"))
    return min(rates, key=lambda r: r.bytes_per_s) if rates else None


def read_batch_rate(benchmarks_dir: Path, model: str, task: Task | str) -> BatchRate:
    """``<benchmarks_dir>/<model>.json``'s S3 job rate, else the task's default."""
    path = benchmarks_dir / f"{model}.json"
    if path.is_file():
        found = rate_from_benchmark(json.loads(path.read_text(encoding="utf-8")), f"{path.name}")
        if found is not None:
            return found
    return default_rate(task)


class BatchSizing(BaseModel):
    """One model's batch sizing as deployed: where objects go and how the state machine cuts them."""

    model_config = ConfigDict(frozen=True)

    rate: BatchRate  # on the batch functions' Lambda size
    timeout_s: int
    memory_mb: int
    architecture: Literal["arm64", "x86_64"] = "arm64"
    map_concurrency: int = Field(ge=1)

    @property
    def route_threshold_bytes(self) -> int:
        """Objects up to this size run in the direct function; larger ones start the state machine."""
        return int(self.rate.bytes_per_s * self.timeout_s * ROUTE_MARGIN)

    @property
    def chunk_bytes(self) -> int:
        """Input bytes per chunk (closed at the next window boundary)."""
        return max(MIN_CHUNK_BYTES, int(self.rate.bytes_per_s * self.timeout_s * CHUNK_MARGIN))

    @property
    def max_chunked_bytes(self) -> int:
        """The largest object the chunked route takes: MAX_CHUNKS chunks (larger chunks would outrun the timeout)."""
        return MAX_CHUNKS * self.chunk_bytes


def batch_sizing(
    rate: BatchRate, *, memory_mb: int, timeout_s: int, map_concurrency: int,
    architecture: Literal["arm64", "x86_64"] = "arm64",
) -> BatchSizing:
    """The sizing of a model's batch functions, from the bench's rate scaled to their memory."""
    return BatchSizing(rate=rate.on_lambda(memory_mb), timeout_s=timeout_s, memory_mb=memory_mb,
                       architecture=architecture, map_concurrency=map_concurrency)


class JobEstimate(BaseModel):
    """What one object will take: the route, the chunks, the wall time and the bill."""

    size_bytes: int
    records: int
    route: Literal["direct", "state-machine", "too-large"]
    chunks: int
    chunk_bytes: int
    records_per_chunk: int
    concurrency: int
    wall_s: float
    lambda_gb_s: float
    lambda_requests: int
    sfn_transitions: int
    cost_usd: float
    rate_records_per_s: float  # per function, at its memory
    rate_source: str


def estimate_job(size_bytes: int, sizing: BatchSizing, *, records: int | None = None) -> JobEstimate:
    """The plan for an object of ``size_bytes`` (``records`` when known, else from the rate's bytes/record)."""
    rate = sizing.rate
    line_bytes = size_bytes / records if records else rate.bytes_per_record  # this object's own, when counted
    records = records if records is not None else max(1, round(size_bytes / rate.bytes_per_record))
    gb = sizing.memory_mb / 1024
    compute_s = size_bytes / rate.bytes_per_s
    price = PRICES.lambda_gb_s[sizing.architecture]
    if size_bytes <= sizing.route_threshold_bytes:
        cost = compute_s * gb * price + PRICES.lambda_request
        return JobEstimate(
            size_bytes=size_bytes, records=records, route="direct", chunks=1, chunk_bytes=size_bytes,
            records_per_chunk=records, concurrency=1, wall_s=compute_s, lambda_gb_s=compute_s * gb,
            lambda_requests=1, sfn_transitions=0, cost_usd=cost, rate_records_per_s=rate.records_per_s,
            rate_source=rate.source,
        )
    chunk = sizing.chunk_bytes
    chunks = max(1, math.ceil(size_bytes / chunk))
    concurrency = min(sizing.map_concurrency, chunks)
    chunk_s = min(chunk, size_bytes) / rate.bytes_per_s
    plan_s = size_bytes / PLAN_SCAN_BYTES_PER_S
    merge_s = 5 + chunks * MERGE_S_PER_CHUNK
    waves = math.ceil(chunks / concurrency)
    wall = plan_s + waves * chunk_s + merge_s
    gb_s = (plan_s + compute_s + merge_s) * gb
    # per run: plan, route, map, merge (+ start/end); per chunk: the child execution's start, task, end
    transitions = 6 + 3 * chunks
    requests = chunks + 2
    cost = gb_s * price + requests * PRICES.lambda_request + transitions * PRICES.sfn_transition
    return JobEstimate(
        size_bytes=size_bytes, records=records,
        route="state-machine" if size_bytes <= sizing.max_chunked_bytes else "too-large", chunks=chunks,
        chunk_bytes=chunk,
        records_per_chunk=max(1, round(chunk / line_bytes)), concurrency=concurrency, wall_s=wall,
        lambda_gb_s=gb_s, lambda_requests=requests, sfn_transitions=transitions, cost_usd=cost,
        rate_records_per_s=rate.records_per_s, rate_source=rate.source,
    )


def describe(estimate: JobEstimate, sizing: BatchSizing) -> list[str]:
    """The estimate as the lines ``maas batch --plan`` prints."""
    mb = 1024 * 1024
    lines = [
        f"size        {estimate.size_bytes / mb:,.1f} MiB, ~{estimate.records:,} records",
        f"rate        {estimate.rate_records_per_s:,.0f} records/s per function ({sizing.memory_mb} MB, "
        f"{sizing.rate.vcpus:.2f} vCPU; {sizing.rate.bytes_per_s / 1024:,.1f} KiB/s) from {estimate.rate_source}",
        f"threshold   {sizing.route_threshold_bytes / mb:,.1f} MiB (direct up to {ROUTE_MARGIN:.0%} of the "
        f"{sizing.timeout_s} s timeout)",
    ]
    if estimate.route == "direct":
        lines.append("route       direct: one invocation of the S3 job function")
    elif estimate.route == "too-large":
        return [*lines, f"route       refused: more than {MAX_CHUNKS:,} chunks of {estimate.chunk_bytes / mb:,.2f} MiB "
                        f"({sizing.max_chunked_bytes / mb:,.0f} MiB at most for this model); split the object"]
    else:
        lines += [
            "route       state machine: plan -> Distributed Map over chunks -> merge",
            f"chunks      {estimate.chunks:,} of {estimate.chunk_bytes / mb:,.1f} MiB (~{estimate.records_per_chunk:,} "
            f"records, ~{estimate.chunk_bytes / sizing.rate.bytes_per_s:,.0f} s each)",
            f"concurrency {estimate.concurrency} (MaxConcurrency {sizing.map_concurrency})",
        ]
    lines += [
        f"wall time   ~{_duration(estimate.wall_s)}",
        f"cost        ~${estimate.cost_usd:,.2f}: Lambda {estimate.lambda_gb_s:,.0f} GB-s ({sizing.architecture}) "
        f"+ {estimate.lambda_requests:,} requests"
        + (f" + {estimate.sfn_transitions:,} state transitions" if estimate.sfn_transitions else ""),
    ]
    return lines


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
