"""The paths `maas bench` times really run end to end (no timing assertions: speed lives in the benchmark)."""

from __future__ import annotations

from maas_dev.bench.batch import batch_lines, batch_throughput
from maas_dev.server import BackgroundServer


def test_batch_throughput_runs_every_path_on_the_same_records(registry, monkeypatch):
    pipeline = registry.get("minilm-embed")
    calls: list[int] = []
    original = pipeline.execute

    def spy(features, parameters):  # type: ignore[no-untyped-def]
        calls.append(len(features))
        return original(features, parameters)

    monkeypatch.setattr(pipeline, "execute", spy)  # every path runs the model through execute
    with BackgroundServer(registry) as server:
        result = batch_throughput(pipeline, server, seq=32, count=48, rounds=1)
    assert result["batch"] == pipeline.limits.max_batch and set(result["sets"]) == {"uniform", "mixed"}
    for figures in result["sets"].values():
        assert set(figures["records_per_s"]) == {"bare_session_run", "pipeline_in_process", "http_task_api", "s3_job"}
        assert all(rate > 0 for rate in figures["records_per_s"].values())
        assert figures["fraction_of_bare"]["bare_session_run"] == 1.0
    # every path ran all 48 records of both sets in chunks of at most max_batch (warm-up + 1 timed round)
    assert sum(calls) == 48 * 2 * 2 * 3 and max(calls) <= pipeline.limits.max_batch
    lines = "\n".join(batch_lines(result))
    assert "| uniform |" in lines and "| mixed |" in lines


def test_uniform_records_are_about_seq_tokens_and_mixed_ones_are_real_sentences(registry):
    from maas_dev.bench.batch import records

    pipeline = registry.get("minilm-embed")
    records_ = records(pipeline, seq=64, count=4)
    counts = pipeline.encoder.encode(records_["uniform"], truncate=True).token_counts
    assert all(60 <= count <= 64 for count in counts) and len(set(records_["uniform"])) == 4
    mixed = pipeline.encoder.encode(records_["mixed"], truncate=True).token_counts
    assert len(set(records_["mixed"])) == 4 and len(set(mixed)) > 1
