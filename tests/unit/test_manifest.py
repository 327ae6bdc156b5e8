"""The manifest contract: content versions are stable, unsafe file names are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from functions.contract import FileEntry, Manifest, Quantization, content_version

SHA = "a" * 64


def test_content_version_depends_on_bytes_not_order():
    a = {"model.onnx": FileEntry(sha256=SHA, size_bytes=1), "tokenizer.json": FileEntry(sha256="b" * 64, size_bytes=2)}
    b = dict(reversed(list(a.items())))
    assert content_version(a) == content_version(b)
    changed = {**a, "model.onnx": FileEntry(sha256="c" * 64, size_bytes=1)}
    assert content_version(changed) != content_version(a)


@pytest.mark.parametrize("name", ["../model.onnx", "sub/model.onnx", ".hidden", "manifest.json"])
def test_file_names_must_be_plain(name):
    with pytest.raises(ValidationError):
        Manifest(
            name="m",
            task="sentence-embeddings",
            version="v",
            inputs=[],
            outputs=[],
            quantization=Quantization(preset="fp32", method="none", weight_type="fp32"),
            files={name: FileEntry(sha256=SHA, size_bytes=1)},
        )
