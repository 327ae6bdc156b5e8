"""`maas bench --peers`: case plumbing, skipping, rounds and reports, on fakes (no peer environment needed)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

from maas_dev.bench.encoder_peers import WORKLOADS, encoder_cases, int8_config_for_host, workload_texts
from maas_dev.bench.peer_process import (
    PeerCase,
    PeerProcess,
    alternate_rounds,
    paired_ratio,
    start_all,
    summarise,
)
from maas_dev.bench.peer_report import (
    encoder_lines,
    fastest_peer,
    write_encoder_peers_report,
    write_generation_peers_report,
)

REPO = Path(__file__).resolve().parents[2]
MACHINE = {"cpu": "cpu", "cpus_used": 2, "isa": ["avx2"], "onnxruntime": "1", "torch": "2", "python": "3"}


def _console() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.mark.parametrize(
    ("machine", "flags", "config"),
    [
        ("aarch64", "", "arm64"),
        ("arm64", "", "arm64"),
        ("x86_64", " fpu avx2 avx512f avx512_vnni", "avx512_vnni"),
        ("x86_64", " fpu avx2 avx512f", "avx512"),
        ("x86_64", " fpu avx2", "avx2"),
        ("x86_64", " fpu sse4_2", None),
        ("riscv64", "", None),
    ],
)
def test_int8_peer_is_the_optimum_config_for_the_host_isa(machine, flags, config):
    chosen, why = int8_config_for_host(machine, flags)
    assert chosen == config
    assert why  # every choice, and every absence, says why


def test_missing_exports_skip_the_onnx_peers_saying_how_to_make_them(tmp_path):
    # GIVEN no peer exports on disk
    cases = encoder_cases("minilm-embed", tmp_path / "art", tmp_path / "none", sys.executable, None, {}, tmp_path)
    by_name = {c.name: c for c in cases}
    # THEN the ONNX and fastembed peers are skipped with the command that makes them; maas and torch still run
    for name, case in by_name.items():
        if name.startswith("st_onnx") or name.startswith("fastembed"):
            assert case.skip and "peer_exports.py" in case.skip, name
    assert by_name["maas"].skip is None
    assert by_name["torch_sentence_transformers"].skip is None


def test_a_peer_whose_library_or_files_are_missing_is_skipped_not_failed(tmp_path):
    # GIVEN a fastembed case pointing at a folder without a model (and, in maas's venv, without fastembed)
    spec = {"kind": "fastembed", "model_dir": str(tmp_path), "model_name": "x", "workloads": {}, "how": "HOW"}
    case = PeerCase("fastembed_fp32", "fastembed", sys.executable, "maas_dev.bench.encoder_worker", spec)
    skipped: dict[str, str] = {}
    # WHEN the bench starts it
    running = start_all([case], REPO, tmp_path / "logs", lambda c, why: skipped.update({c.name: why}))
    # THEN it is skipped with a line that says what is missing and how to provide it
    assert running == {}
    assert "MAAS_PEER_PYTHON" in skipped["fastembed_fp32"] or "HOW" in skipped["fastembed_fp32"]


def test_worker_answers_calls_over_the_pipe(tmp_path):
    # GIVEN an ORT case on a tiny real graph (Identity over input_ids, as float): the protocol end to end
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["h0"], to=TensorProto.FLOAT),
         helper.make_node("Unsqueeze", ["h0", "axes"], ["last_hidden_state"])],
        "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["b", "s", 1])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [2])],
    )  # fmt: skip
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    from model_build.sources.minilm import minilm_dir

    spec = {"kind": "ort", "model": str(model), "tokenizer": str(minilm_dir() / "tokenizer.json"),
            "workloads": {"w": [["a short text"], ["another"]]}}  # fmt: skip
    process = PeerProcess(PeerCase("ort", "ort", sys.executable, "maas_dev.bench.encoder_worker", spec), REPO)
    try:
        assert process.ready
        samples = process.call("time", workload="w", repeats=3)
        shape = process.call("outputs", texts=["x", "y", "z"], path=str(tmp_path / "o.npy"))
    finally:
        process.close()
    assert len(samples) == 3 and all(s > 0 for s in samples)
    assert shape == [3, 1]


class _FakeProcess:
    def __init__(self, name: str, order: list[str], speed: float) -> None:
        self.name, self.order, self.speed = name, order, speed

    def call(self, step: str) -> list[float]:
        self.order.append(f"{step}:{self.name}")
        return [0.001 * self.speed, 0.003 * self.speed, 0.002 * self.speed]


def test_cases_alternate_within_each_step_and_the_order_rotates(monkeypatch):
    monkeypatch.setattr("maas_dev.bench.peer_process.SETTLE_S", 0)
    order: list[str] = []
    running = {n: _FakeProcess(n, order, speed) for n, speed in (("a", 1.0), ("b", 2.0), ("maas", 0.5))}
    steps = {"w1": lambda p: p.call("w1"), "w2": lambda p: p.call("w2")}
    per_round = alternate_rounds(running, steps, rounds=2)  # type: ignore[arg-type]
    assert order == [
        "w1:a", "w1:b", "w1:maas", "w2:b", "w2:maas", "w2:a",  # round 1: each step rotates the order
        "w1:b", "w1:maas", "w1:a", "w2:maas", "w2:a", "w2:b",  # round 2 starts one further
    ]  # fmt: skip
    summary = summarise(per_round["a"])
    assert summary["w1"]["p50_ms"] == pytest.approx(2.0)
    assert summary["w1"]["round_p50_ms"] == pytest.approx([2.0, 2.0])
    assert paired_ratio(per_round, "maas", "b", "w2") == pytest.approx(4.0)


def test_workloads_are_texts_of_exactly_the_asked_token_count():
    class WordCounter:  # a tokenizer stand-in: one token per word, plus [CLS] and [SEP]
        def count_tokens(self, text: str) -> int:
            return len(text.split()) + 2

    real = [f"sentence number {i} has a few words in it" for i in range(40)]
    workloads = workload_texts(WordCounter(), real, seq=128)
    assert [len(c) for c in workloads["b32_128"]] == [32]
    assert all(WordCounter().count_tokens(t) == 128 for t in workloads["b32_128"][0])
    assert len(workloads["b1_real"]) == 32 and all(len(c) == 1 for c in workloads["b1_real"])


def _latency(ms: float) -> dict:
    return {"p50_ms": ms, "p99_ms": ms * 1.1, "n": 9, "round_p50_ms": [ms * 0.95, ms, ms * 1.05]}


def _encoder_results(quality: dict) -> dict:
    def case(scale: float, q: dict) -> dict:
        return {"label": "x", "latency": {w: _latency(scale * base) for w, base in
                                          {"b1_128": 10, "b32_128": 300, "b1_real": 3, "b32_real": 80}.items()},
                "quality": q}  # fmt: skip

    return {
        "model": "minilm-embed",
        "date": "2026-11-30T00:00:00+00:00",
        "machine": MACHINE,
        "arch": "x86_64",
        "load": {"start": [0.5, 0.4, 0.3], "end": [0.6, 0.5, 0.4]},
        "rounds": 3,
        "repeats": {"b1_128": 20},
        "heldout": 300,
        "int8_config": "x86-64 with avx512_vnni",
        "gates": {"mean_cosine": 0.995, "min_cosine": 0.98, "top1_agreement": None},
        "skipped": {"fastembed_fp32": "fastembed is not importable; set MAAS_PEER_PYTHON"},
        "paired": {"maas": {w: {"st_onnx_int8_avx512_vnni": 1.3} for w in WORKLOADS}},
        "cases": {
            "torch_sentence_transformers": case(2.5, quality),
            "st_onnx_int8_avx512_vnni": case(1.0, {"mean_cosine": 0.9929, "min_cosine": 0.9823}),
            "maas": case(0.8, {"mean_cosine": 0.9957, "min_cosine": 0.9906}),
        },
    }


def test_encoder_report_shows_every_peer_the_ratio_to_the_fastest_and_quality(tmp_path):
    results = _encoder_results({"mean_cosine": 1.0, "min_cosine": 1.0})
    assert fastest_peer(results["cases"], "b1_128") == ("st_onnx_int8_avx512_vnni", 10.0)
    report = write_encoder_peers_report(results, tmp_path, _console())
    text = report.read_text()
    assert "st_onnx_int8_avx512_vnni" in text and "torch_sentence_transformers" in text
    assert "| 1.25× | **1.30×** | yes |" in text  # maas ÷ the fastest peer: p50s, then paired per round
    assert "0.9929 / 0.9823" in text and "| no |" in text  # the INT8 peer misses the catalog's gates
    assert "x86_64" in text and "0.50/0.40/0.30" in text  # architecture and machine load are named
    assert "fastembed is not importable" in text  # a skipped peer says why
    assert (tmp_path / "minilm-embed-peers.png").is_file()
    assert json.loads((tmp_path / "minilm-embed-peers.json").read_text())["cases"]["maas"]


def test_classifier_report_judges_top1_agreement():
    results = _encoder_results({"top1_agreement": 1.0})
    results["gates"] = {"mean_cosine": None, "min_cosine": None, "top1_agreement": 0.99}
    for name, top1 in (("st_onnx_int8_avx512_vnni", 0.975), ("maas", 0.996)):
        results["cases"][name]["quality"] = {"top1_agreement": top1}
    lines, _ = encoder_lines(results)
    assert any("97.50% top-1 | no" in line for line in lines)
    assert any("99.60% top-1 | yes" in line for line in lines)


def test_generation_speed_comes_from_back_to_back_pairs():
    from maas_dev.bench.generation_peers import speed

    rounds = [[[0.1, 1.37], [0.1, 1.37]], [[0.2, 2.74], [0.2, 2.74]]]  # 127 decode tokens in 1.27 s, then 2.54 s
    result = speed(rounds, new_tokens=128)
    assert result["decode_round_tokens_per_s"] == pytest.approx([100.0, 50.0])
    assert result["ttft_round_ms"] == pytest.approx([100.0, 200.0])


def test_generation_report_states_decode_and_ttft_against_the_fastest_peer(tmp_path):
    def case(decode: float, ttft: float, top1: float) -> dict:
        return {"label": "x", "time_to_first_token_ms": ttft, "ttft_round_ms": [ttft, ttft],
                "decode_tokens_per_s": decode, "decode_round_tokens_per_s": [decode, decode],
                "quality": {"top1_agreement": top1, "perplexity": 10.0, "perplexity_increase": 0.001,
                            "greedy_match": 0.5}}  # fmt: skip

    results = {
        "model": "smollm2-chat",
        "date": "2026-11-30T00:00:00+00:00",
        "machine": MACHINE,
        "arch": "aarch64",
        "load": {"start": [0.1, 0.1, 0.1]},
        "rounds": 2,
        "new_tokens": 128,
        "prompt_tokens": 46,
        "heldout_positions": 400,
        "gates": {"top1_agreement": 0.99, "perplexity_increase": 0.02},
        "skipped": {"onnxruntime_genai_int4": "no genai_config.json"},
        "cases": {
            "llama_cpp": case(150.0, 80.0, 0.97),
            "maas": case(75.0, 100.0, 1.0),
            "maas_int8": case(150.0, 60.0, 0.97),
        },
    }
    from maas_dev.bench.generation_peers import paired

    results["paired"] = paired(results["cases"])
    text = write_generation_peers_report(results, tmp_path, _console()).read_text()
    assert "| llama_cpp | 0.50× | **0.50×** | 1.25× | **1.25×** | 0.970 |" in text  # maas against llama.cpp
    assert "| llama_cpp | 1.00× | **1.00×** | 0.75× | **0.75×** | 0.970 |" in text  # another maas build, not a peer
    assert "perplexity increase ≤ 0.02" in text
    assert "0.970" in text and "aarch64" in text and "no genai_config.json" in text
    assert (tmp_path / "smollm2-chat-peers.png").is_file()


def test_each_case_runs_with_numpy_blas_single_threaded(tmp_path):
    # GIVEN a worker that reports its environment (the harness's numpy, e.g. the classifier head over a peer's
    # vectors, must not leave OpenBLAS threads spinning into the peer's next run)
    (tmp_path / "env_worker.py").write_text(
        "import os\nfrom maas_dev.bench.worker import serve\n\n"
        "class Runner:\n    def __init__(self, spec):\n        pass\n\n"
        "    def env(self, name):\n        return os.environ.get(name)\n\n"
        "serve(Runner)\n"
    )
    case = PeerCase("env", "env", sys.executable, "env_worker", {}, env={"PYTHONPATH": f"{tmp_path}:{REPO}"})
    process = PeerProcess(case, REPO)
    try:
        assert process.ready
        # WHEN it is asked, THEN numpy's BLAS is single-threaded there
        assert process.call("env", name="OPENBLAS_NUM_THREADS") == "1"
    finally:
        process.close()
