"""Marian checkpoints ship SentencePiece + vocab.json: the converter re-indexes pieces by vocab.json.

The SentencePiece model here is built by hand (protobuf), so this checks the mechanics — ids from
vocab.json, Unigram segmentation by the model's scores, ``</s>`` appended, language codes kept whole,
Metaspace decoding — not agreement with the ``sentencepiece`` library itself (not installed here).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_build.sources.marian_tokenizer import main, marian_tokenizer

PIECES = [  # (piece, score, type): 1 normal, 2 unknown, 3 control
    ("<unk>", 0.0, 2),
    ("<s>", 0.0, 3),
    ("</s>", 0.0, 3),
    ("▁hello", -1.0, 1),
    ("▁world", -1.5, 1),
    ("▁", -2.0, 1),
    ("▁w", -3.0, 1),
    ("orld", -3.0, 1),
    *[(c, -5.0, 1) for c in "helowrd"],
]
# Marian's vocab.json numbers pieces its own way; "▁Welt" only exists on the target side.
VOCAB = ["</s>", "<unk>", ">>de<<", "▁world", "▁hello", "▁", "▁Welt", "▁w", "orld", *"helowrd", "<pad>"]


def write_checkpoint(directory: Path) -> Path:
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    proto.trainer_spec.model_type = 1
    proto.trainer_spec.unk_id = 0
    for piece, score, kind in PIECES:
        entry = proto.pieces.add()
        entry.piece, entry.score, entry.type = piece, score, kind
    (directory / "source.spm").write_bytes(proto.SerializeToString())
    (directory / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(VOCAB)}), encoding="utf-8")
    return directory


def test_ids_come_from_vocab_json_and_eos_is_appended(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path)
    tokenizer = marian_tokenizer(ckpt / "source.spm", ckpt / "vocab.json")
    encoding = tokenizer.encode("hello  world")
    assert encoding.tokens == ["▁hello", "▁world", "</s>"]
    assert encoding.ids == [VOCAB.index("▁hello"), VOCAB.index("▁world"), 0]


def test_language_code_stays_whole_and_decoding_joins_pieces(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path)
    tokenizer = marian_tokenizer(ckpt / "source.spm", ckpt / "vocab.json")
    assert tokenizer.encode(">>de<< hello").tokens[:2] == [">>de<<", "▁hello"]
    ids = [VOCAB.index("▁hello"), VOCAB.index("▁Welt"), 0]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "hello Welt"


def test_unknown_characters_map_to_unk(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path)
    tokenizer = marian_tokenizer(ckpt / "source.spm", ckpt / "vocab.json")
    assert VOCAB.index("<unk>") in tokenizer.encode("hello ß").ids


def test_command_writes_tokenizer_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = write_checkpoint(tmp_path)
    assert main([str(ckpt)]) == 0
    assert (ckpt / "tokenizer.json").is_file() and "tokenizer.json" in capsys.readouterr().out
    assert main([]) == 2


def test_gaps_in_vocab_ids_are_refused(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path)
    (ckpt / "vocab.json").write_text(json.dumps({"</s>": 0, "<unk>": 2}), encoding="utf-8")
    with pytest.raises(ValueError, match="without gaps"):
        marian_tokenizer(ckpt / "source.spm", ckpt / "vocab.json")
