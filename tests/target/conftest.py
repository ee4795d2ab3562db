"""Fixtures for target-brevo: a fake Brevo per test, checked against Brevo's spec at teardown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.brevo import FakeBrevo


@pytest.fixture
def brevo() -> Iterator[FakeBrevo]:
    """A fresh fake Brevo on loopback; every request it got must have matched the spec."""
    fake = FakeBrevo()
    with fake:
        yield fake
    assert fake.violations == []
