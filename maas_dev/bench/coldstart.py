"""Cold start, measured in fresh processes: process start → imports → artifact verify → session → first answer.

The maas path is exactly what a Lambda init + first invoke does (the runtime stack only, no torch);
the baseline is the usual alternative: torch + transformers loading the checkpoint. Peak memory is the
child's own high-water mark (VmHWM): getrusage's ru_maxrss would report the benchmark parent's peak,
which a child inherits across fork + exec.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_MAAS_CHILD = r"""
import json, sys, time
marks = {"start": time.time()}
import numpy, onnxruntime, tokenizers, fastapi, mangum, aws_lambda_powertools  # the runtime stack
from functions.inference.loader import resolve_artifact
from functions.inference.registry import pipeline_for
marks["imported"] = time.time()
directory, manifest = resolve_artifact(sys.argv[1], cache_dir=__import__("pathlib").Path("/tmp/maas-bench-cache"))
marks["verified"] = time.time()
pipeline = pipeline_for(directory, manifest, warmup=False)
marks["session"] = time.time()
pipeline.predict(["the first request after a cold start"])
marks["first_answer"] = time.time()
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"marks": marks, "max_rss_mb": int(hwm.split()[1]) / 1024}))
"""

_TORCH_CHILD = r"""
import json, sys, time
marks = {"start": time.time()}
import torch, transformers
marks["imported"] = time.time()
from transformers import AutoModel, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
marks["verified"] = time.time()
model = AutoModel.from_pretrained(sys.argv[1]).eval()
marks["session"] = time.time()
with torch.inference_mode():
    batch = tokenizer(["the first request after a cold start"], return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
marks["first_answer"] = time.time()
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"marks": marks, "max_rss_mb": int(hwm.split()[1]) / 1024}))
"""

PHASES = (
    ("process start", "spawn", "start"),
    ("imports", "start", "imported"),
    ("load + verify artifact", "imported", "verified"),
    ("session / model load", "verified", "session"),
    ("first inference", "session", "first_answer"),
)


def _run_child(code: str, arg: str) -> dict[str, Any]:
    spawn = time.time()
    out = subprocess.run(
        [sys.executable, "-c", code, arg],
        capture_output=True,
        text=True,
        check=True,
        env={
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "PATH": "/usr/bin:/bin",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        },
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["marks"]["spawn"] = spawn
    marks = result["marks"]
    phases = {name: (marks[b] - marks[a]) * 1000 for name, a, b in PHASES}
    return {"phases_ms": phases, "total_ms": (marks["first_answer"] - spawn) * 1000, "max_rss_mb": result["max_rss_mb"]}


def measure_cold_start(artifact: Path, torch_checkpoint: Path, runs: int = 3) -> dict[str, Any]:
    """Median of ``runs`` fresh processes each, alternating maas and torch so noise hits both."""
    maas, baseline = [], []
    for _ in range(runs):
        maas.append(_run_child(_MAAS_CHILD, str(artifact)))
        baseline.append(_run_child(_TORCH_CHILD, str(torch_checkpoint)))

    def median(results: list[dict[str, Any]]) -> dict[str, Any]:
        best = sorted(results, key=lambda r: r["total_ms"])[len(results) // 2]
        return {**best, "all_totals_ms": [round(r["total_ms"], 1) for r in results]}

    return {"maas": median(maas), "torch": median(baseline)}
