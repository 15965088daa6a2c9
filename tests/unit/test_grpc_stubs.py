"""The checked-in gRPC stubs are what ``make proto`` generates from relay.proto now."""

from __future__ import annotations

from pathlib import Path

from relay.grpc.generate import GENERATED, SOURCE_ROOT, generate


def test_the_checked_in_stubs_are_up_to_date(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    assert [p.name for p in fresh] == list(GENERATED)
    for path in fresh:
        checked_in = SOURCE_ROOT / "relay" / "grpc" / "v1" / path.name
        assert checked_in.read_text() == path.read_text(), f"{checked_in} is stale: run make proto"
