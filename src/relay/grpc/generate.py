"""Generate the Python stubs of ``relay/grpc/v1/relay.proto`` (``make proto``; ``python -m
relay.grpc.generate [OUT_DIR]``).

The stubs are checked in, so that installing Relay needs no code generator; a test generates them again
into a temporary directory and compares (``tests/unit/test_grpc_stubs.py``). ``grpcio-tools`` is a
development dependency, pinned so that the comparison is exact.
"""

from __future__ import annotations

import sys
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # src/: the proto's import path is relay/grpc/v1/...
PROTO = "relay/grpc/v1/relay.proto"
GENERATED = ("relay_pb2.py", "relay_pb2.pyi", "relay_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    """Write the stubs under ``out`` (as ``out/relay/grpc/v1/...``); returns their paths."""
    import grpc_tools  # type: ignore[import-untyped]
    from grpc_tools import protoc

    includes = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/timestamp.proto
    out.mkdir(parents=True, exist_ok=True)
    argv = [
        "protoc",
        f"-I{SOURCE_ROOT}",
        f"-I{includes}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(SOURCE_ROOT / PROTO),
    ]
    if protoc.main(argv) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    return [out / "relay" / "grpc" / "v1" / name for name in GENERATED]


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE_ROOT
    for path in generate(out):
        print(path)


if __name__ == "__main__":
    main()
