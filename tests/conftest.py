"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from otlp_receiver import OtlpReceiver


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A started OTLP receiver (gRPC + HTTP on free ports), stopped after the test."""
    with OtlpReceiver() as receiver:
        yield receiver
