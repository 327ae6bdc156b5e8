"""Measure what decoding images costs a fresh process: ``python -m tests.reliability.image_cost FILE... [--burst]``.

Prints one JSON object per file: the outcome (ok, or the error code), the peak RSS above the process's RSS just
before (VmHWM, reset per file through /proc/self/clear_refs), wall and CPU seconds. ``--burst`` decodes every
file one after another instead and reports the RSS left behind once they are done (freed memory the allocator
kept). Runs in its own process so that nothing else the test session allocated is counted.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path


def _status_mb(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"{field}:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else 0.0


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def main(argv: list[str]) -> None:
    from PIL import Image

    from functions.errors import MaasError
    from functions.inference.image_config import ImagePreprocessing
    from functions.inference.images import image_pixels

    config = ImagePreprocessing()  # the catalog's defaults: 8 MiB encoded, 40 MP
    Image.init()
    burst = "--burst" in argv
    files = [Path(a) for a in argv if not a.startswith("--")]
    if burst:
        before = _status_mb("VmRSS")
        for path in files:
            image_pixels(path.read_bytes(), config)
        print(json.dumps({"files": len(files), "rss_before_mb": round(before, 1),
                          "rss_after_mb": round(_status_mb("VmRSS"), 1)}))  # fmt: skip
        return
    for path in files:
        data = path.read_bytes()
        base = _status_mb("VmRSS")
        _reset_peak()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            image_pixels(data, config)
            outcome = "ok"
        except MaasError as exc:
            outcome = f"{exc.status_code} {exc.code}"
        result = {
            "file": path.name,
            "outcome": outcome,
            "peak_mb": round(_status_mb("VmHWM") - base, 1),
            "seconds": round(time.perf_counter() - wall, 2),
            "cpu_seconds": round(time.process_time() - cpu, 2),
        }
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
