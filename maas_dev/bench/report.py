"""Write `maas bench` results: JSON, a Markdown table and PNG plots under docs/benchmarks/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

CASES = ("torch_eager_fp32", "ort_fp32", "maas_artifact")


def size_line(sizes: dict[str, float], *, decimals: int = 1, end: str = ".") -> str:
    """The reports' model-size sentence: fp32 export vs the maas artifact, in MB and as a ratio."""
    fp32, served = sizes["fp32"], sizes["maas_artifact"]
    ratio = f"{served / fp32:.0%}"
    return f"Model file: fp32 {fp32:.{decimals}f} MB → maas artifact {served:.{decimals}f} MB ({ratio}){end}"


def write_json(results: dict[str, Any], out_dir: Path, stem: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")


def machine_line(results: dict[str, Any], *extra: str) -> str:
    """Date · CPU · CPUs used · ISA · onnxruntime (· extra): the line that says where a figure comes from."""
    m = results["machine"]
    parts = [results["date"], m["cpu"], f"{m['cpus_used']} CPUs used", f"ISA {', '.join(m['isa']) or 'baseline'}",
             f"onnxruntime {m['onnxruntime']}", *extra]  # fmt: skip
    if m.get("emulated"):
        parts.append(f"**emulated ({m['emulated']}): the timings are not this CPU's**")
    return " · ".join(parts)


def model_sizes(fp32: Path, served: Path) -> dict[str, float]:
    return {"fp32": fp32.stat().st_size / 1e6, "maas_artifact": served.stat().st_size / 1e6}


def latency_table(lat: dict[str, Any], cases: tuple[str, ...], title: str) -> tuple[list[str], Table]:
    """Markdown rows and a rich table of p50/p99 per batch and the speed-up over torch eager, per case."""
    batches = [int(k.split("_")[1]) for k in lat]
    lines = [
        "| case | " + " | ".join(f"b{b} p50 | b{b} p99 | ×torch b{b}" for b in batches) + " |",
        "|---|" + "---|---|---|" * len(batches),
    ]
    table = Table("case", *[f"b{b} p50 ms (×torch)" for b in batches], title=title)
    for case in cases:
        cells, row = [], []
        for b in batches:
            r = lat[f"batch_{b}"]
            ratio = r["torch_eager_fp32"]["p50_ms"] / r[case]["p50_ms"]
            cells.append(f"{r[case]['p50_ms']:.1f} ms | {r[case]['p99_ms']:.1f} ms | {ratio:.2f}×")
            row.append(f"{r[case]['p50_ms']:.1f} ({ratio:.2f}×)")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
        table.add_row(case, *row)
    return lines, table


def write_report(results: dict[str, Any], out_dir: Path, console: Console) -> Path:
    name = results["model"]
    write_json(results, out_dir, name)
    table_lines, table = latency_table(results["latency"], CASES, f"{name}: latency (seq {results['seq']})")
    lines = [
        f"# `maas bench {name}` (seq {results['seq']})",
        "",
        machine_line(results, f"torch {results['machine']['torch']}"),
        "",
        "All cases timed interleaved in one run; × = speed-up over torch eager at the same batch (higher is better).",
        "",
        *table_lines,
    ]
    console.print(table)

    serving = results["serving"]
    bare = serving["bare_session_run"]["p50_ms"]
    lines += [
        "",
        f"## Serving overhead (batch 1, one input of {serving['tokens']['count']} tokens)",
        "",
        "| path | p50 | p99 | × bare session.run |",
        "|---|---|---|---|",
    ]
    for case in ("bare_session_run", "pipeline_in_process", "http_end_to_end"):
        s = serving[case]
        lines.append(f"| {case} | {s['p50_ms']:.2f} ms | {s['p99_ms']:.2f} ms | {s['p50_ms'] / bare:.3f}× |")
    if "concurrency" in results:
        c = results["concurrency"]
        lines += [
            "",
            f"{c['clients']} concurrent HTTP clients: {c['http_rps']:.1f} req/s vs back-to-back bare "
            f"session.run {c['bare_session_run_rps']:.1f} req/s ({c['ratio']:.2f}×).",
        ]
    if "batch_throughput" in results:
        from maas_dev.bench.batch import batch_lines

        lines += batch_lines(results["batch_throughput"])
    if "microbatch" in results:
        from maas_dev.bench.microbatch import microbatch_lines

        lines += microbatch_lines(results["microbatch"])
    if "cold_start" in results:
        lines += _cold_start_lines(results["cold_start"])
    if "roofline" in results:
        r = results["roofline"]
        lines += [
            "",
            "## Roofline reference (same run)",
            "",
            f"ORT GEMM {r['shape'][0]}×{r['shape'][1]}×{r['shape'][2]}: fp32 {r['fp32_gops']:.0f} GOP/s, "
            f"int8 (MatMulInteger) {r['int8_gops']:.0f} GOP/s. The maas artifact at batch 32 does "
            f"{r['model_gops_b32']:.0f} GOP/s = **{r['fraction_of_int8_gemm']:.0%}** of the int8 GEMM rate.",
        ]
    lines += ["", size_line(results["sizes_mb"]), ""]
    plots = _plots(results, out_dir)
    lines += [f"![{p.stem}]({p.name})" for p in plots] + [""]
    report = out_dir / f"{name}.md"
    report.write_text("\n".join(lines))
    return report


def _cold_start_lines(cold: dict[str, Any]) -> list[str]:
    maas, torch = cold["maas"], cold["torch"]
    lines = [
        "",
        "## Cold start (fresh process → first answer; median of alternating runs)",
        "",
        "| phase | maas runtime | torch + transformers |",
        "|---|---|---|",
    ]
    for phase in maas["phases_ms"]:
        lines.append(f"| {phase} | {maas['phases_ms'][phase]:.0f} ms | {torch['phases_ms'][phase]:.0f} ms |")
    lines += [
        f"| **total** | **{maas['total_ms']:.0f} ms** | **{torch['total_ms']:.0f} ms** |",
        f"| peak RSS | {maas['max_rss_mb']:.0f} MB | {torch['max_rss_mb']:.0f} MB |",
        "",
        f"maas / torch cold start: {maas['total_ms'] / torch['total_ms']:.2f}×.",
    ]
    return lines


def _plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    name, paths = results["model"], []
    lat = results["latency"]
    batches = [int(k.split("_")[1]) for k in lat]
    fig, ax = plt.subplots(figsize=(6, 4))
    for case in CASES:
        ax.plot(batches, [lat[f"batch_{b}"][case]["p50_ms"] for b in batches], marker="o", label=case)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="batch size",
        ylabel="p50 latency (ms)",
        title=f"{name}: latency vs batch (seq {results['seq']})",
    )
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / f"{name}-latency.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    if "cold_start" in results:
        fig, ax = plt.subplots(figsize=(6, 3))
        left = {"maas": 0.0, "torch": 0.0}
        for phase in results["cold_start"]["maas"]["phases_ms"]:
            for label in ("maas", "torch"):
                width = results["cold_start"][label]["phases_ms"][phase] / 1000
                ax.barh(label, width, left=left[label], label=phase if label == "maas" else None)
                left[label] += width
        ax.set(xlabel="seconds", title=f"{name}: cold start breakdown")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        paths.append(out_dir / f"{name}-cold-start.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
