"""Generate the committed gRPC/protobuf stubs from proto/, or check them.

Rules: every ``proto/**/*.proto`` file generates ``<same path>_pb2.py``,
``_pb2.pyi`` and ``_pb2_grpc.py`` under the repository root, so
``proto/ketch/api/v1/ketch.proto`` becomes the importable module
``ketch.api.v1.ketch_pb2``. Stubs are committed; ``--check`` regenerates them
into a temporary directory and fails on any difference, so the committed
stubs always match the contract and the pinned grpcio-tools.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"


def generate(out_dir: Path) -> list[Path]:
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    outputs = []
    for proto in protos:
        stem = proto.relative_to(PROTO_ROOT).with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            outputs.append(Path(str(stem) + suffix))
    return outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed stubs differ")
    opts = parser.parse_args()
    if not opts.check:
        for rel in generate(ROOT):
            print(f"wrote {rel}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = [
            rel
            for rel in generate(Path(tmp))
            if not (ROOT / rel).exists() or not filecmp.cmp(Path(tmp) / rel, ROOT / rel, shallow=False)
        ]
    if stale:
        print("generated stubs are out of date; run: python scripts/gen_proto.py", file=sys.stderr)
        for rel in stale:
            print(f"  {rel}", file=sys.stderr)
        return 1
    print("proto stubs up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
