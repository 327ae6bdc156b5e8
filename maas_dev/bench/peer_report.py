"""Reports of `maas bench --peers`: JSON, Markdown and a plot, every peer against maas.

Pure functions of the results dict (tests render them from fakes, without any peer installed).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from maas_dev.bench.peer_process import is_maas
from maas_dev.bench.report import machine_line, write_json

WORKLOAD_TITLES = {
    "b1_128": "batch 1, 128 tokens",
    "b32_128": "batch 32, 128 tokens",
    "b1_real": "batch 1, real sentence",
    "b32_real": "batch 32, real sentences",
}
TARGET = 1.2  # maas ≥ 1.2× the fastest peer (issue 17)


def fastest_peer(cases: dict[str, Any], workload: str, metric: str = "p50_ms") -> tuple[str, float] | None:
    """The peer (not maas) with the lowest ``metric`` on ``workload``: (name, value)."""
    peers = [(n, c["latency"][workload][metric]) for n, c in cases.items() if not is_maas(n)]
    return min(peers, key=lambda p: p[1]) if peers else None


def quality_cell(quality: dict[str, float]) -> str:
    if "top1_agreement" in quality:
        return f"{quality['top1_agreement']:.2%} top-1"
    return f"{quality['mean_cosine']:.4f} / {quality['min_cosine']:.4f}"


def passes_gates(quality: dict[str, float], gates: dict[str, float | None]) -> bool:
    checks = [(k, v) for k, v in gates.items() if v is not None and k in quality]
    return all(quality[k] >= v for k, v in checks)


def _range(values: list[float]) -> str:
    return f"{min(values):.1f}–{max(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def encoder_lines(results: dict[str, Any]) -> tuple[list[str], Table]:
    """The latency + quality table and the maas-vs-fastest-peer table, as Markdown lines and a rich table."""
    cases, workloads = results["cases"], list(WORKLOAD_TITLES)
    quality_head = "top-1 agreement" if any("top1_agreement" in c["quality"] for c in cases.values()) else (
        "cosine mean / min")  # fmt: skip
    lines = [
        "| case | " + " | ".join(WORKLOAD_TITLES[w] for w in workloads) + f" | {quality_head} vs torch | gates |",
        "|---|" + "---|" * len(workloads) + "---|---|",
    ]
    table = Table("case", *[WORKLOAD_TITLES[w] for w in workloads], "quality", title=f"{results['model']}: peers")
    for name, case in cases.items():
        cells, row = [], []
        for w in workloads:
            lat = case["latency"][w]
            best = fastest_peer(cases, w)
            ratio = f" ({best[1] / lat['p50_ms']:.2f}×)" if best else ""
            cells.append(f"{lat['p50_ms']:.1f} ms{ratio} <br>{_range(lat['round_p50_ms'])}")
            row.append(f"{lat['p50_ms']:.1f}{ratio}")
        mark = "yes" if passes_gates(case["quality"], results["gates"]) else "no"
        shown = f"**{name}**" if is_maas(name) else name
        lines.append(f"| {shown} | " + " | ".join(cells) + f" | {quality_cell(case['quality'])} | {mark} |")
        table.add_row(name, *row, quality_cell(case["quality"]))
    paired = results.get("paired", {})
    for mine_name in [n for n in cases if is_maas(n)]:
        head = (
            f"| workload | fastest peer | its p50 | {mine_name} p50 | ratio of p50s | paired ratio (median of rounds) |"
        )
        lines += ["", f"{head} met (≥ {TARGET}×) |", "|---|---|---|---|---|---|---|"]
        for w in workloads:
            best = fastest_peer(cases, w)
            if best is None:
                continue
            mine = cases[mine_name]["latency"][w]["p50_ms"]
            pair = paired.get(mine_name, {}).get(w, {}).get(best[0])
            verdict = pair if pair is not None else best[1] / mine
            pair_cell = f"**{pair:.2f}×**" if pair is not None else "–"
            lines.append(
                f"| {WORKLOAD_TITLES[w]} | {best[0]} | {best[1]:.1f} ms | {mine:.1f} ms | {best[1] / mine:.2f}× | "
                f"{pair_cell} | {'yes' if verdict >= TARGET else 'no'} |"
            )
    return lines, table


def write_encoder_peers_report(results: dict[str, Any], out_dir: Path, console: Console) -> Path:
    intro = (
        f"Each case in its own process; {results['rounds']} rounds, the order of cases rotated every round "
        f"(calls per round: {', '.join(f'{w} ×{n}' for w, n in results['repeats'].items())}). Cells: p50 over all "
        "rounds (× = the fastest peer's p50 ÷ this case's: above 1 is faster than every peer), then the range "
        "of the per-round medians. Each call is texts in → the task's output: tokenization, the model, pooling "
        f"(and the head) included. Quality on the build's {results['heldout']} held-out inputs against torch "
        f"fp32; gates = the catalog's ({_gate_text(results['gates'])}). INT8 config: {results['int8_config']}. "
        "Within a round the cases of one workload run back to back, so the paired ratio (the peer's round median "
        "÷ maas's, median over rounds) is the figure least moved by other load on the machine."
    )
    return _write_report(results, out_dir, console, encoder_lines(results), intro, _encoder_plot)


def _write_report(
    results: dict[str, Any],
    out_dir: Path,
    console: Console,
    table: tuple[list[str], Any],
    intro: str,
    plot: Callable[[dict[str, Any], Path], Path | None],
) -> Path:
    """The JSON, the table on the console, and the Markdown report with its plot."""
    name = results["model"]
    stem = f"{name}-peers"
    write_json(results, out_dir, stem)
    table_lines, rich_table = table
    console.print(rich_table)
    lines = [
        f"# `maas bench {name} --peers`",
        "",
        machine_line(results, f"arch {results['arch']}", f"load average {_load(results)}"),
        "",
        intro,
        "",
        *table_lines,
    ]
    if results.get("skipped"):
        lines += ["", "Skipped here:", ""] + [f"- `{k}`: {v}" for k, v in results["skipped"].items()]
    image = plot(results, out_dir / f"{stem}.png")
    if image:
        lines += ["", f"![{stem}]({image.name})"]
    report = out_dir / f"{stem}.md"
    report.write_text("\n".join([*lines, ""]))
    return report


def _gate_text(gates: dict[str, float | None]) -> str:
    def bound(key: str) -> str:
        return "≤" if "increase" in key or key.startswith("max") else "≥"

    return ", ".join(f"{k.replace('_', ' ')} {bound(k)} {v}" for k, v in gates.items() if v is not None)


def _load(results: dict[str, Any]) -> str:
    load = results.get("load") or {}
    if isinstance(load, dict):
        return " → ".join("/".join(f"{x:.2f}" for x in v) for v in load.values() if v) or "unknown"
    return "/".join(f"{x:.2f}" for x in load) or "unknown"


def _plot_title(results: dict[str, Any]) -> str:
    return f"{results['model']}: maas and its peers ({results['machine']['cpu']}, {results['arch']})"


def _encoder_plot(results: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    cases = results["cases"]
    fig, axes = plt.subplots(1, len(WORKLOAD_TITLES), figsize=(13, 3.6), sharey=True)
    names = list(cases)
    for ax, (workload, title) in zip(axes, WORKLOAD_TITLES.items(), strict=True):
        values = [cases[n]["latency"][workload]["p50_ms"] for n in names]
        colors = ["tab:red" if is_maas(n) else "tab:gray" for n in names]
        ax.barh(names, values, color=colors)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.1f}", va="center", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("p50 ms (lower is better)", fontsize=8)
        ax.margins(x=0.25)
        ax.invert_yaxis()
        ax.tick_params(labelsize=7)
    fig.suptitle(_plot_title(results), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def generation_lines(results: dict[str, Any]) -> tuple[list[str], Table]:
    """One row per case: TTFT, decode tokens/s (× the fastest peer), quality against torch."""
    cases = results["cases"]
    peers = {n: c for n, c in cases.items() if not is_maas(n)}
    best_decode = max((c["decode_tokens_per_s"] for c in peers.values()), default=None)
    lines = [
        "| case | time to first token | decode tokens/s | × fastest peer's decode | top-1 agreement | perplexity "
        "(vs torch) | greedy match |",
        "|---|---|---|---|---|---|---|",
    ]
    table = Table("case", "TTFT ms", "decode tok/s", "× fastest peer", "top-1", "ppl +", "greedy",
                  title=f"{results['model']}: peers")  # fmt: skip
    for name, c in cases.items():
        q = c.get("quality", {})
        ratio = f"{c['decode_tokens_per_s'] / best_decode:.2f}×" if best_decode else "–"
        top1 = f"{q['top1_agreement']:.3f}" if q else "–"
        ppl = f"{q['perplexity']:.3f} ({q['perplexity_increase']:+.2%})" if q else "–"
        greedy = f"{q['greedy_match']:.3f}" if q else "–"
        shown = f"**{name}**" if is_maas(name) else name
        lines.append(
            f"| {shown} | {c['time_to_first_token_ms']:.0f} ms <br>{_range(c['ttft_round_ms'])} | "
            f"{c['decode_tokens_per_s']:.1f} <br>{_range(c['decode_round_tokens_per_s'])} | {ratio} | {top1} | "
            f"{ppl} | {greedy} |"
        )
        table.add_row(name, f"{c['time_to_first_token_ms']:.0f}", f"{c['decode_tokens_per_s']:.1f}", ratio, top1,
                      f"{q['perplexity_increase']:+.2%}" if q else "–", greedy)  # fmt: skip
    paired = results.get("paired", {})
    for name in [n for n in cases if is_maas(n)]:
        mine = cases[name]
        lines += ["", f"| {name} against | decode ratio (p50s) | decode ratio (round median) | TTFT ratio (p50s) | "
                  "TTFT ratio (round median) | the peer's top-1 agreement |", "|---|---|---|---|---|---|"]  # fmt: skip
        for peer, c in peers.items():
            pair = paired.get(name, {}).get(peer, {})
            q = c.get("quality", {})
            lines.append(
                f"| {peer} | {mine['decode_tokens_per_s'] / c['decode_tokens_per_s']:.2f}× | "
                f"**{pair.get('decode', float('nan')):.2f}×** | "
                f"{mine['time_to_first_token_ms'] / c['time_to_first_token_ms']:.2f}× | "
                f"**{pair.get('ttft', float('nan')):.2f}×** | {q.get('top1_agreement', float('nan')):.3f} |"
            )
    if paired:
        lines += ["", "Targets (issue 17): decode ratio ≥ 1.0× and TTFT ratio ≤ 1.0× against llama.cpp, at equal or "
                  "better agreement with torch."]  # fmt: skip
    return lines, table


def write_generation_peers_report(results: dict[str, Any], out_dir: Path, console: Console) -> Path:
    intro = (
        f"Each case in its own process; {results['rounds']} rounds, the order of cases rotated every round. Prompt "
        f"{results['prompt_tokens']} tokens, {results['new_tokens']} greedy tokens (EOS ignored); time to first "
        "token = the prompt and one greedy token; decode tokens/s = the other tokens ÷ the rest of the time (p50 "
        "over all rounds, then the range of the per-round figures). Quality as the build's gates measure it: "
        f"next-token top-1 agreement with torch fp32 and perplexity on {results['heldout_positions']} held-out "
        "positions (teacher-forced), greedy continuations of the parity prompts equal to torch's. Catalog gates: "
        f"{_gate_text(results['gates'])}."
    )
    return _write_report(results, out_dir, console, generation_lines(results), intro, _generation_plot)


def _generation_plot(results: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    cases = results["cases"]
    names = list(cases)
    colors = ["tab:red" if is_maas(n) else "tab:gray" for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharey=True)
    panels = (
        ("decode tokens/s (higher is better)", [cases[n]["decode_tokens_per_s"] for n in names]),
        ("time to first token, ms (lower is better)", [cases[n]["time_to_first_token_ms"] for n in names]),
        ("top-1 agreement with torch", [cases[n].get("quality", {}).get("top1_agreement", 0.0) for n in names]),
    )
    for ax, (title, values) in zip(axes, panels, strict=True):
        ax.barh(names, values, color=colors)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.3g}", va="center", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.margins(x=0.25)
        ax.tick_params(labelsize=7)
    axes[0].invert_yaxis()
    fig.suptitle(_plot_title(results), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
