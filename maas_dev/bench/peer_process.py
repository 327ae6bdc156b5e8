"""The parent side of `maas bench --peers`: each case in its own process, timing rounds alternated.

Why processes: an ONNX Runtime session whose threads spin after a run steals CPU from whatever runs next
in the same process, which favoured the spinning case when cases were interleaved in one process. Here
only one case runs at a time; the others wait on their pipe, and a short pause between cases lets the
previous one's threads park. The order of cases rotates every round, so no case always runs first.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from maas_dev.bench.common import percentiles

SETTLE_S = 0.3  # between two cases: long enough for ORT's spinning threads to go to sleep


@dataclass
class PeerCase:
    """One case: a name for the tables, what it is, which interpreter and worker run it, and its spec."""

    name: str
    label: str
    python: str
    worker: str  # module run with ``python -m`` from the repository root
    spec: dict[str, Any]
    skip: str | None = None  # set when the case cannot run here: why, and how to provide it
    env: dict[str, str] = field(default_factory=dict)


class PeerProcess:
    """A running case: send calls, read answers."""

    def __init__(self, case: PeerCase, cwd: Path, log: TextIO | None = None) -> None:
        self.case = case
        # numpy's BLAS single-threaded: the harness's own numpy (the classifier head over a peer's vectors) would
        # otherwise leave OpenBLAS threads spinning after each call, taking the CPU from the peer's next ORT run
        # (measured: a batch of 32 real sentences 35 -> 92 ms). maas's runtime does no BLAS calls.
        env = {**os.environ, "PYTHONPATH": str(cwd), "TOKENIZERS_PARALLELISM": "false", "OPENBLAS_NUM_THREADS": "1",
               **case.env}  # fmt: skip
        self.proc = subprocess.Popen(
            [case.python, "-m", case.worker],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log if log is not None else subprocess.DEVNULL,
            text=True,
        )
        self._send(case.spec)
        self.hello = self._read()

    @property
    def ready(self) -> bool:
        return bool(self.hello.get("ready"))

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            return {"ready": False, "skip": f"worker exited (code {code}) without answering", "error": "exited"}
        answer: dict[str, Any] = json.loads(line)
        return answer

    def call(self, method: str, **args: Any) -> Any:
        self._send({"method": method, "args": args})
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"{self.case.name}.{method}: {answer['error']}")
        return answer["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._send({"method": "quit"})
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()


def start_all(
    cases: Iterable[PeerCase], cwd: Path, log_dir: Path, on_skip: Callable[[PeerCase, str], None]
) -> dict[str, PeerProcess]:
    """Start every case that is not skipped, one after another (loading in parallel would skew nothing, but
    would crowd 2 vCPUs); a case whose worker cannot load it is skipped with its reason."""
    log_dir.mkdir(parents=True, exist_ok=True)
    running: dict[str, PeerProcess] = {}
    for case in cases:
        if case.skip:
            on_skip(case, case.skip)
            continue
        process = PeerProcess(case, cwd, (log_dir / f"{case.name}.log").open("w"))
        if process.ready:
            running[case.name] = process
        else:
            process.close()
            case.skip = str(process.hello.get("skip"))
            on_skip(case, case.skip)
    return running


def alternate_rounds(
    running: dict[str, PeerProcess],
    steps: dict[str, Callable[[PeerProcess], Any]],
    rounds: int,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Every step (a workload: ``step(process)`` → its samples) for every case, ``rounds`` times.

    Cases alternate within each step, so the cases of one comparison run seconds apart (load from other work
    on the machine drifts slowly and hits them alike), and the order of cases rotates with every step and
    round, so no case always runs first. Returns per case the list of per-round {step: samples}."""
    names = list(running)
    per_round: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for index in range(rounds):
        if on_round:
            on_round(index)
        for name in names:
            per_round[name].append({})
        for offset, (step, run) in enumerate(steps.items()):
            shift = (index + offset) % max(1, len(names))
            for name in names[shift:] + names[:shift]:
                time.sleep(SETTLE_S)
                per_round[name][index][step] = run(running[name])
    return per_round


def paired_ratio(per_round: dict[str, list[dict[str, list[float]]]], case: str, reference: str, step: str) -> float:
    """Median over rounds of (reference's round median ÷ case's round median): above 1, ``case`` is faster.
    Each round's pair ran seconds apart, so drifting load on the machine cancels out of the ratio."""
    ratios = [
        statistics.median(ref[step]) / statistics.median(mine[step])
        for ref, mine in zip(per_round[reference], per_round[case], strict=True)
    ]
    return statistics.median(ratios)


def maas_variants() -> dict[str, str]:
    """``MAAS_BENCH_VARIANTS="name=artifact dir,..."``: other builds of the model, shown beside the served one as
    ``maas_<name>`` (never counted as peers), e.g. a preset that failed its gates."""
    pairs = [item.split("=", 1) for item in os.environ.get("MAAS_BENCH_VARIANTS", "").split(",") if "=" in item]
    return {f"maas_{name.strip()}": path.strip() for name, path in pairs}


def is_maas(name: str) -> bool:
    return name == "maas" or name.startswith("maas_")


def load_average() -> list[float]:
    """The 1/5/15-minute load averages (other work on the machine shows here; the report records it)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return []


def summarise(per_round: list[dict[str, list[float]]]) -> dict[str, dict[str, Any]]:
    """Per workload: p50/p99 over every sample of every round, and the range of the per-round medians."""
    workloads = per_round[0].keys() if per_round else []
    summary: dict[str, dict[str, Any]] = {}
    for workload in workloads:
        pooled = [s for r in per_round for s in r[workload]]
        medians = [statistics.median(r[workload]) * 1000 for r in per_round]
        summary[workload] = {**percentiles(pooled), "round_p50_ms": medians}
    return summary
