"""Hypothesis strategies for JSON-like text as hostile senders write it: valid JSON that Python cannot
represent safely (lone surrogates, integers over 4,300 digits, nesting 100k deep, NaN), control characters,
and records joined with mixed line endings. Values are generated as JSON *text*, because some of them (a
5,000-digit integer) cannot even be built as a Python value to be serialised."""

from __future__ import annotations

import json

from hypothesis import strategies as st

ODD_TEXT = "\x00\x01\x1b\x7f\u0085\u2028\ufeff\ufffd\U0001f600\u202e\u0301"
LINE_ENDINGS = ("\n", "\r\n", "\r")


def _string(text: str) -> str:
    return json.dumps(text)  # escapes control characters: a JSON string never holds a raw CR or LF


def _surrogate_string(prefix: str) -> str:
    return _string(prefix)[:-1] + "\\ud800" + '"'  # a lone high surrogate, as a valid JSON escape


strings = st.one_of(
    st.text(max_size=40).map(_string),
    st.text(alphabet=st.sampled_from(ODD_TEXT), max_size=20).map(_string),
    st.text(max_size=10).map(_surrogate_string),
    st.just('"\\udc00\\ud800"'),  # a reversed pair: two lone surrogates
)
numbers = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["9" * 5000, "-" + "1" * 4301, "1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1e-400"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
scalars = st.one_of(strings, numbers, st.sampled_from(["true", "false", "null"]))


def _array(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"


values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(_array),
        st.lists(st.tuples(strings, children), max_size=4).map(_object),
    ),
    max_leaves=12,
)
deep = st.builds(lambda n, leaf: "[" * n + leaf + "]" * n, st.sampled_from([50, 999, 3000, 100_000]), scalars)
hostile_values = st.one_of(values, deep)
good_texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=60)


@st.composite
def jsonl_records(draw: st.DrawFn, max_records: int = 12) -> list[tuple[str, str | None]]:
    """JSONL lines: ``(line text, expected id)``; the expected id is set for good records, which must succeed."""
    records: list[tuple[str, str | None]] = []
    for index in range(draw(st.integers(1, max_records))):
        kind = draw(st.sampled_from(["good", "hostile input", "hostile id", "hostile parameters", "hostile line"]))
        rid = f"r{index}"
        if kind == "good":
            text = draw(good_texts)
            records.append((_object([('"id"', _string(rid)), ('"inputs"', _string(text))]), rid))
        elif kind == "hostile input":
            records.append((_object([('"id"', _string(rid)), ('"inputs"', draw(hostile_values))]), None))
        elif kind == "hostile id":
            records.append((_object([('"id"', draw(hostile_values)), ('"inputs"', '"fine"')]), None))
        elif kind == "hostile parameters":
            pairs = [('"id"', _string(rid)), ('"inputs"', '"fine"'), ('"parameters"', draw(hostile_values))]
            records.append((_object(pairs), None))
        else:
            records.append((draw(hostile_values), None))
    return records


def join_lines(lines: list[str], endings: list[str]) -> bytes:
    """Lines joined with the given endings (cycled), the last one too; UTF-8 (a lone surrogate stays an escape)."""
    return "".join(line + endings[i % len(endings)] for i, line in enumerate(lines)).encode("utf-8")
