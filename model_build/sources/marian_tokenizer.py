"""``tokenizer.json`` for a Marian checkpoint (``source.spm`` + ``vocab.json``), for the ``tokenizers``-only runtime.

Helsinki-NLP's Marian checkpoints ship SentencePiece models and a ``vocab.json`` whose ids differ from
the SentencePiece ids; transformers has no fast Marian tokenizer. This rebuilds what ``MarianTokenizer``
does with the ``tokenizers`` library: the source model's Unigram pieces and scores, re-indexed by
``vocab.json``, its normalization (precompiled charsmap), ``▁`` word boundaries, ``</s>`` appended, and
``>>xx<<`` language codes kept whole. The SentencePiece file is read with protobuf alone (the
``sentencepiece`` package is not needed).

Run: ``python -m model_build.sources.marian_tokenizer CHECKPOINT_DIR`` (writes ``tokenizer.json`` and,
for checkpoints with separate vocabularies, ``target_tokenizer.json``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram

_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED = 1, 2, 3, 4
_LANGUAGE_CODE = re.compile(r">>.+<<")


def _spm_proto(path: Path) -> Any:
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    proto.ParseFromString(path.read_bytes())
    if proto.trainer_spec.model_type != 1:
        raise ValueError(f"{path} is not a SentencePiece Unigram model (Marian's kind)")
    return proto


def marian_tokenizer(spm_file: Path, vocab_file: Path, *, eos: str = "</s>", unk: str = "<unk>") -> Tokenizer:
    """A ``tokenizers`` Tokenizer whose ids are ``vocab_file``'s and whose segmentation is ``spm_file``'s."""
    proto = _spm_proto(spm_file)
    vocab: dict[str, int] = json.loads(vocab_file.read_text(encoding="utf-8"))
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(f"{vocab_file}: ids must be 0..{len(vocab) - 1} without gaps")
    scores = {p.piece: p.score for p in proto.pieces if p.type in (_NORMAL, _USER_DEFINED)}
    # vocab.json pieces the source model never produces (target-only) must never win a segmentation.
    floor = min(scores.values(), default=0.0) - 100.0
    pieces = sorted(vocab, key=vocab.__getitem__)
    tokenizer = Tokenizer(Unigram([(p, scores.get(p, floor)) for p in pieces], unk_id=vocab[unk], byte_fallback=False))
    steps = [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), "▁")]
    charsmap = proto.normalizer_spec.precompiled_charsmap
    tokenizer.normalizer = normalizers.Sequence([normalizers.Precompiled(charsmap), *steps] if charsmap else steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    specials = [p.piece for p in proto.pieces if p.type in (_UNKNOWN, _CONTROL) and p.piece in vocab]
    specials += [p for p in pieces if p in ("<pad>", eos, unk) or _LANGUAGE_CODE.fullmatch(p)]
    tokenizer.add_special_tokens([AddedToken(p, normalized=False, special=True) for p in dict.fromkeys(specials)])
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, vocab[eos])])
    return tokenizer


def write_marian_tokenizers(checkpoint: Path) -> list[Path]:
    """Write ``tokenizer.json`` (source side) and, when the target vocabulary is separate, ``target_tokenizer.json``."""
    written = []
    marian_tokenizer(checkpoint / "source.spm", checkpoint / "vocab.json").save(str(checkpoint / "tokenizer.json"))
    written.append(checkpoint / "tokenizer.json")
    target_vocab = checkpoint / "target_vocab.json"
    if target_vocab.is_file():
        target = marian_tokenizer(checkpoint / "target.spm", target_vocab)
        target.save(str(checkpoint / "target_tokenizer.json"))
        written.append(checkpoint / "target_tokenizer.json")
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m model_build.sources.marian_tokenizer CHECKPOINT_DIR", file=sys.stderr)
        return 2
    for path in write_marian_tokenizers(Path(args[0])):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
