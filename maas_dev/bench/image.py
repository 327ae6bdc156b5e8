"""`maas bench <image-classification model>`: latency and agreement side by side in ONE run.

Timed interleaved at batch 1 and 16 on the same pixels (the held-out photo variants after the
runtime's own decode/resize/crop/normalise): torch eager fp32, ORT on the fp32 export, and the maas
artifact (static INT8). The end-to-end pipeline (JPEG/PNG/WebP bytes → top-5 labels) is timed too, so
decode cost is visible. In the same run, on every held-out variant: top-1 agreement and top-5 overlap
of the maas artifact with torch, and top-1 on the untouched photos a person can label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from maas_dev.bench.common import ensure_built, interleaved, run_header
from maas_dev.bench.report import latency_table, machine_line, model_sizes, size_line, write_json

BATCHES = (1, 16)
CASES = ("torch_eager_fp32", "ort_fp32", "maas_artifact")


def run_image_bench(name: str, *, repeats: int, out_dir: Path, console: Console) -> Path:
    import torch

    from functions.inference.loader import verify_artifact
    from functions.inference.pipelines.image import ImageClassificationPipeline
    from functions.inference.postprocess import softmax
    from functions.inference.registry import pipeline_for
    from functions.inference.session import available_cpus
    from model_build.recipes.image import HELDOUT_PHOTOS, HELDOUT_VARIANTS, LABELLED_PHOTOS, image_set, photo_path
    from model_build.sources import load_source

    entry, artifact, fp32_manifest = ensure_built(name, "stage-fp32/manifest.json", console)
    fp32_dir = fp32_manifest.parent
    torch.set_num_threads(available_cpus())
    source = load_source(entry.source, task=entry.task)
    served = pipeline_for(artifact, verify_artifact(artifact))
    fp32 = pipeline_for(fp32_dir, verify_artifact(fp32_dir))
    assert isinstance(served, ImageClassificationPipeline) and isinstance(fp32, ImageClassificationPipeline)
    input_name = served.session.get_inputs()[0].name
    heldout = image_set(HELDOUT_PHOTOS, HELDOUT_VARIANTS, seed=2)

    def torch_probabilities(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return softmax(source.reference({input_name: torch.from_numpy(pixels)}).numpy())

    results = run_header(name, repeats=repeats, quantization=served.manifest.quantization.preset, latency={})
    for batch in BATCHES:
        images = heldout[:batch]
        pixels = served.pixels(images)
        console.log(f"batch {batch}: timing torch eager / ORT fp32 / maas artifact / end-to-end, interleaved")
        results["latency"][f"batch_{batch}"] = interleaved(
            {
                "torch_eager_fp32": lambda p=pixels: torch_probabilities(p),
                "ort_fp32": lambda p=pixels: fp32.probabilities(p),
                "maas_artifact": lambda p=pixels: served.probabilities(p),
                "maas_end_to_end": lambda i=images: served.predict(i, {"top_k": 5}),
            },
            repeats=max(3, repeats // (2 if batch > 1 else 1)),
        )

    console.log(f"agreement with torch on {len(heldout)} held-out variants")
    reference, got = [], []
    for i in range(0, len(heldout), 16):
        pixels = served.pixels(heldout[i : i + 16])
        reference.append(torch_probabilities(pixels))
        got.append(served.probabilities(pixels))
    ref, out = np.concatenate(reference), np.concatenate(got)
    ref_top5, out_top5 = np.argsort(-ref, axis=1)[:, :5], np.argsort(-out, axis=1)[:, :5]
    names = list(LABELLED_PHOTOS)
    labelled = served.predict([photo_path(n).read_bytes() for n in names], {"top_k": 1}).outputs
    results["quality"] = {
        "heldout_images": len(heldout),
        "top1_agreement": float((ref.argmax(1) == out.argmax(1)).mean()),
        "top5_overlap": float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ref_top5, out_top5, strict=True)])),
        "labelled_top1": sum(o[0]["label"] in LABELLED_PHOTOS[n] for n, o in zip(names, labelled, strict=True)),
        "labelled_photos": len(names),
    }
    results["sizes_mb"] = model_sizes(fp32_dir / "model.onnx", artifact / "model.onnx")
    return write_image_report(results, out_dir, console)


def write_image_report(results: dict[str, Any], out_dir: Path, console: Console) -> Path:
    name, q = results["model"], results["quality"]
    write_json(results, out_dir, name)
    table_lines, table = latency_table(results["latency"], (*CASES, "maas_end_to_end"), f"{name}: latency")
    lines = [
        f"# `maas bench {name}`",
        "",
        machine_line(results, f"torch {results['machine']['torch']}", f"artifact {results['quantization']}"),
        "",
        "All cases timed interleaved in one run on the same preprocessed pixels; × = speed-up over torch eager "
        "at the same batch (higher is better). `maas_end_to_end` adds decoding the encoded images and "
        "preprocessing them (the pipeline's `predict`).",
        "",
        *table_lines,
    ]
    console.print(table)
    lines += [
        "",
        "## Agreement with torch (same run)",
        "",
        f"- top-1 agreement on {q['heldout_images']} held-out photo variants: **{q['top1_agreement']:.3f}**",
        f"- top-5 overlap: {q['top5_overlap']:.3f}",
        f"- untouched labelled photos, top-1 correct: {q['labelled_top1']}/{q['labelled_photos']}",
        "",
        size_line(results["sizes_mb"]),
        "",
    ]
    report = out_dir / f"{name}.md"
    report.write_text("\n".join(lines))
    return report
