"""Property tests: every path from bytes to a validated config ends in a config or in one
ConfigError line naming where the problem is (keys, values, nesting, number sizes,
encodings, byte order marks, invalid UTF-8); never another exception.

The oracle is the fuzzer's (`tests.fuzz.targets.check_config`), which `python -m tests.fuzz
--parser config` runs on 10^6 mutated files.
"""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from rules.settings import KEYS
from tests.fuzz.targets import check_config

#: Any code point, unpaired surrogates included (JSON can spell them as \ud800).
_chars = st.characters(codec=None, exclude_categories=())
_keys = st.sampled_from(KEYS) | st.text(_chars, max_size=12)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**50), 10**50)
    | st.floats(allow_nan=False)
    | st.text(_chars, max_size=40)
    | st.sampled_from(["manual", "system", "http://p.example:3128", "*", "80,443", ""])
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)
_sections = st.dictionaries(_keys, _values, max_size=6)
_documents = _sections | st.fixed_dictionaries(
    {
        "configurationFileVersion": st.sampled_from([2, 2.0, 1, "2", True]),
        "containersProxy": _values,
    }
)


def _encode(doc: object, how: str) -> bytes:
    text = json.dumps(doc, ensure_ascii=how == "ascii")
    raw = text.encode("utf-8", "surrogatepass")  # a surrogate as raw (invalid) UTF-8
    if how in ("ascii", "utf-8"):
        return raw
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    return text.encode(how, "surrogatepass")


@given(_documents, st.sampled_from(["ascii", "utf-8", "bom", "utf-16", "utf-32"]))
@example({"configurationFileVersion": 2, "containersProxy": {"\ud800": 1}}, "ascii")
@example({"containersProxy": {"mode": "\udfff"}}, "ascii")
@example({"exclude": ["a.example", "\ud83d"]}, "utf-8")
def test_any_document_in_any_encoding_is_a_config_or_one_message(doc: object, how: str) -> None:
    check_config(_encode(doc, how))


@given(st.binary(max_size=300))
def test_any_bytes_are_a_config_or_one_message(data: bytes) -> None:
    check_config(data)


@given(st.integers(1, 5000), st.sampled_from(["[", '{"a":', '{"containersProxy":']))
def test_deep_nesting_is_one_message(depth: int, opener: str) -> None:
    check_config((opener * depth).encode())


@given(st.integers(4000, 20000))
def test_huge_numbers_are_one_message(digits: int) -> None:
    check_config(b'{"containersProxy": {"locked": ' + b"9" * digits + b"}}")
