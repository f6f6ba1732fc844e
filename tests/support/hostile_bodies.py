"""Hypothesis strategies for hostile webhook bodies, and the verdict the ingester owes each.

- `json_objects()`: arbitrary JSON objects (nested, unicode, numbers at the edges);
- `json_non_objects()`: JSON that is valid but not an object;
- `webhook_variants()`: 8x8's example bodies with fields replaced, retyped, removed,
  re-cased or padded: near misses of the known shapes, for the normalizer's sake;
- `expected_verdict(body, limit)`: what `POST /webhooks/whatsapp` must answer for
  these bytes from an authorized sender: (status, error or None).
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from example_bodies import EXAMPLE_NAMES, example
from hypothesis import strategies as st

# orjson reads 64-bit integers; bigger ones are read as floats: both fine, but keep the
# generated ones where the round trip through orjson is exact.
_INTEGERS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
_TEXT = st.text(
    alphabet=st.characters(codec="utf-8"),  # any code point but lone surrogates
    max_size=40,
)
SCALARS = st.none() | st.booleans() | _INTEGERS | _FLOATS | _TEXT


def json_values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda children: (
            st.lists(children, max_size=5) | st.dictionaries(_TEXT, children, max_size=5)
        ),
        max_leaves=max_leaves,
    )


def json_objects() -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(_TEXT, json_values(), max_size=8)


def json_non_objects() -> st.SearchStrategy[Any]:
    return SCALARS | st.lists(json_values(), max_size=5)


def encodings(value: Any) -> st.SearchStrategy[bytes]:
    """`value` as JSON bytes, compact or indented, in the key order it has."""
    return st.sampled_from([0, orjson.OPT_INDENT_2]).map(
        lambda option: orjson.dumps(value, option=option)
    )


def _paths(node: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


def _mutation(paths: list[tuple[str | int, ...]]) -> st.SearchStrategy[tuple[str, Any, Any]]:
    path = st.sampled_from(paths)
    return st.one_of(
        st.tuples(st.just("replace"), path, json_values(max_leaves=5)),
        st.tuples(st.just("drop"), path, st.none()),
        st.tuples(st.just("swapcase"), path, st.none()),
        st.tuples(st.just("pad"), path, st.integers(min_value=1, max_value=5_000)),
        st.tuples(st.just("add"), st.just(()), st.tuples(_TEXT, json_values(max_leaves=5))),
    )


def _apply(body: dict[str, Any], mutation: tuple[str, Any, Any]) -> None:
    kind, path, argument = mutation
    if kind == "add":
        key, value = argument
        body[key] = value
        return
    node: Any = body
    for part in path[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return  # an earlier mutation removed or retyped the way there
    leaf = path[-1]
    try:
        current = node[leaf]
    except (KeyError, IndexError, TypeError):
        return
    if kind == "replace":
        node[leaf] = argument
    elif kind == "drop":
        del node[leaf]
    elif kind == "swapcase" and isinstance(current, str):
        node[leaf] = current.swapcase()
    elif kind == "pad" and isinstance(current, str):
        node[leaf] = current + "x" * argument


@st.composite
def webhook_variants(draw: st.DrawFn) -> dict[str, Any]:
    """An example body of 8x8's with zero to three mutations."""
    name = draw(st.sampled_from(EXAMPLE_NAMES))
    body: dict[str, Any] = example(name)
    mutations = draw(st.lists(_mutation(_paths(body)), max_size=3))
    body = copy.deepcopy(body)
    for mutation in mutations:
        _apply(body, mutation)
    return body


def expected_verdict(raw: bytes, limit: int) -> tuple[int, str | None]:
    """What the ingester owes an authorized, signed `raw` of the right content type."""
    if len(raw) > limit:
        return 413, "too_large"
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return 400, "invalid_json"
    if not isinstance(body, dict):
        return 400, "not_an_object"
    return 200, None
