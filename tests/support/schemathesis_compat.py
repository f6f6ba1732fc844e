"""Lets schemathesis generate JSON objects under our hypothesis pin.

schemathesis 4.23 (the newest that runs with our jsonschema-rs 0.61, see pyproject.toml)
generates from JSON Schemas through hypothesis-jsonschema 0.23.1, whose object strategy
drives a private hypothesis helper, `many`, through its old interface
(`while elements.more(): ... elements.reject()`). Our hypothesis (6.170.15) offers only
the new one (`with many(...) as elements: for _ in elements: ...`), so every object
body failed with `AttributeError: 'many' object has no attribute 'more'`. This adapter
gives hypothesis-jsonschema the old interface on top of the new one; it changes nothing
else and does nothing once `many` has `more()` again.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import hypothesis_jsonschema._from_schema as from_schema
from hypothesis.internal.conjecture import utils as conjecture_utils


class _ManyWithMore:
    def __init__(self, data: Any, **sizes: Any) -> None:
        self._many = conjecture_utils.many(data, **sizes)
        self._many.__enter__()
        self._elements: Iterator[None] = iter(self._many)

    def more(self) -> bool:
        try:
            next(self._elements)
        except StopIteration:
            self._many.__exit__(None, None, None)
            return False
        return True

    def reject(self, why: str | None = None) -> None:
        self._many.reject(why)


def install() -> None:
    if not hasattr(conjecture_utils.many, "more"):
        from_schema.cu = SimpleNamespace(many=_ManyWithMore)  # type: ignore[attr-defined]
