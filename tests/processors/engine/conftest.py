"""Fixtures of the engine's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from processors.engine.state.store import Store, StoreOptions


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """One table partition's store on local disk, closed after the test."""
    opened = Store(tmp_path / "table-0", StoreOptions())
    yield opened
    opened.close()
