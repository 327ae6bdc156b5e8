"""`maas bench` reporting and roofline arithmetic (no timing assertions: speed lives in the benchmark)."""

from __future__ import annotations

import io
import json

from rich.console import Console

from maas_dev.bench.report import write_report
from maas_dev.bench.roofline import encoder_flops_per_token, gemm_gops


def test_minilm_flops_per_token_matches_two_times_params():
    # all-MiniLM-L6-v2: 6 layers × 12·384² dense params ≈ 10.6 M → ≈ 21.2 MFLOP/token + attention at seq 128
    flops = encoder_flops_per_token(hidden=384, layers=6, seq=128)
    assert 21.2e6 < flops < 23e6


def test_gemm_reference_runs_for_both_precisions():
    result = gemm_gops(m=64, k=64, n=64, repeats=2)
    assert result["fp32_gops"] > 0 and result["int8_gops"] > 0


def _case(ms: float) -> dict:
    return {"p50_ms": ms, "p99_ms": ms * 1.2, "n": 5}


def test_report_writes_json_markdown_and_plots(tmp_path):
    results = {
        "model": "m",
        "seq": 128,
        "repeats": 5,
        "date": "2026-11-23T00:00:00+00:00",
        "machine": {"cpu": "cpu", "cpus_used": 2, "isa": ["avx2"], "onnxruntime": "1", "torch": "2"},
        "latency": {
            f"batch_{b}": {
                "torch_eager_fp32": _case(30.0 * b),
                "ort_fp32": _case(20.0 * b),
                "maas_artifact": _case(10.0 * b),
            }
            for b in (1, 8, 32)
        },
        "serving": {
            "bare_session_run": _case(10),
            "pipeline_in_process": _case(10.5),
            "http_end_to_end": _case(11),
            "tokens": {"count": 128},
        },
        "cold_start": {
            side: {"phases_ms": {"imports": 100.0, "first inference": 10.0}, "total_ms": 110.0, "max_rss_mb": 100.0}
            for side in ("maas", "torch")
        },
        "roofline": {
            "shape": [1, 2, 3],
            "fp32_gops": 100.0,
            "int8_gops": 200.0,
            "model_gops_b32": 120.0,
            "fraction_of_int8_gemm": 0.6,
        },
        "sizes_mb": {"fp32": 90.0, "maas_artifact": 23.0},
    }
    report = write_report(results, tmp_path, Console(file=io.StringIO()))
    text = report.read_text()
    assert "| maas_artifact | 10.0 ms | 12.0 ms | 3.00× |" in text
    assert "1.100×" in text and "60%" in text and "maas / torch cold start: 1.00×" in text
    assert json.loads((tmp_path / "m.json").read_text())["model"] == "m"
    assert (tmp_path / "m-latency.png").stat().st_size > 1000
    assert (tmp_path / "m-cold-start.png").is_file()


def test_presets_report_marks_which_presets_clear_the_catalog_gates(tmp_path):
    from maas_dev.bench.presets import write_presets_report

    def preset(mean: float, low: float, size: float, ms: float) -> dict:
        return {"mean_cosine": mean, "min_cosine": low, "size_ratio": size, "b1_p50_ms": ms, "b32_p50_ms": ms * 30}

    results = {
        "model": "m", "served_preset": "good", "heldout": 300, "date": "2026-11-23T00:00:00+00:00",
        "machine": {"cpu": "cpu", "cpus_used": 2, "isa": ["avx2"], "onnxruntime": "1", "torch": "2"},
        "gates": {"mean_cosine": 0.995, "min_cosine": 0.98, "max_size_ratio": 0.3},
        "presets": {"fp32": preset(1.0, 1.0, 1.0, 20.0), "good": preset(0.996, 0.99, 0.26, 10.0),
                    "fast-but-lossy": preset(0.993, 0.985, 0.25, 5.0), "big": preset(0.9999, 0.999, 0.75, 25.0)},
    }  # fmt: skip
    report = write_presets_report(results, tmp_path, Console(file=io.StringIO()))
    rows = {line.split("|")[1].strip(): line for line in report.read_text().splitlines() if line.startswith("| ")}
    assert rows["**good** (served)"].rstrip(" |").endswith("yes") and "2.00×" in rows["**good** (served)"]
    assert rows["fast-but-lossy"].rstrip(" |").endswith("no") and rows["big"].rstrip(" |").endswith("no")
    assert json.loads((tmp_path / "m-presets.json").read_text())["served_preset"] == "good"


def test_every_committed_report_re_renders_byte_identical_from_its_json(tmp_path):
    """The Markdown in docs/benchmarks/ is what the report code makes of the committed results, nothing edited."""
    import json
    from pathlib import Path

    from rich.console import Console

    from maas_dev.bench.generation import write_generation_report
    from maas_dev.bench.image import write_image_report
    from maas_dev.bench.lambda_coldstart import write_report as write_cold_start
    from maas_dev.bench.peer_report import write_encoder_peers_report, write_generation_peers_report
    from maas_dev.bench.presets import write_presets_report
    from maas_dev.bench.report import write_report

    docs = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"
    writers = {
        "minilm-embed": write_report,
        "smollm2-chat": write_generation_report,
        "efficientnet-lite0": write_image_report,
        "minilm-embed-presets": write_presets_report,
        "minilm-embed-lambda-cold-start": write_cold_start,
        "minilm-embed-peers": write_encoder_peers_report,
        "intent-classifier-peers": write_encoder_peers_report,
        "smollm2-chat-peers": write_generation_peers_report,
        "arm64-emulated/minilm-embed-peers": write_encoder_peers_report,
    }
    console = Console(file=open(tmp_path / "console.txt", "w"))  # noqa: SIM115
    for stem, write in writers.items():
        out = tmp_path / stem
        out.mkdir(parents=True)
        rendered = write(json.loads((docs / f"{stem}.json").read_text()), out, console)
        assert rendered.read_text() == (docs / f"{stem}.md").read_text(), stem


ARM64_CPUINFO = """processor\t: 0
model name\t: ARMv8 Processor rev 1 (v8l)
Features\t: fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""
X86_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16
"""


def test_the_cpu_line_names_an_arm64_core_and_the_features_that_pick_int8_kernels() -> None:
    """arm64's cpuinfo (here QEMU's neoverse-n1, as the arm64 run was made) has no useful model name: the core is
    named from its part number, and the features are the arm64 ones (dot product; no i8mm, no SVE on Graviton2)."""
    from maas_dev.bench.common import cpu_description

    assert cpu_description(ARM64_CPUINFO) == ("Neoverse N1 (Graviton2)", ["asimddp"])
    assert cpu_description(X86_CPUINFO) == ("AMD EPYC 9R14", ["avx2", "avx512f", "avx512_vnni"])
    unknown = ARM64_CPUINFO.replace("0xd0c", "0xfff").replace("model name\t: ARMv8 Processor rev 1 (v8l)\n", "")
    assert cpu_description(unknown) == ("arm64 core 0x41/0xfff", ["asimddp"])


def test_an_emulated_run_says_so_on_its_machine_line(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from maas_dev.bench.common import emulation
    from maas_dev.bench.report import machine_line

    monkeypatch.delenv("QEMU_LD_PREFIX", raising=False)
    monkeypatch.delenv("QEMU_CPU", raising=False)
    assert emulation() is None
    monkeypatch.setenv("QEMU_CPU", "neoverse-n1")
    assert emulation() == "QEMU user mode, cpu neoverse-n1"
    machine = {"cpu": "c", "cpus_used": 2, "isa": [], "onnxruntime": "1", "emulated": emulation()}
    results = {"date": "d", "machine": machine}
    assert "emulated (QEMU user mode, cpu neoverse-n1): the timings are not this CPU's" in machine_line(results)
