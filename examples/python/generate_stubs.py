#!/usr/bin/env python3
"""Generates the Python gRPC stubs of DIP Hub from proto/dip/v1/hub.proto.

    python3 examples/python/generate_stubs.py OUT_DIR

writes OUT_DIR/dip/v1/hub_pb2.py and hub_pb2_grpc.py (import them as
`from dip.v1 import hub_pb2, hub_pb2_grpc` with OUT_DIR on sys.path). Needs
grpcio-tools (requirements.txt). The stubs are made at setup time, never
committed, so they always match the proto they were made from.
"""

import pathlib
import subprocess
import sys

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[2] / "proto"


def generate(out_dir: pathlib.Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    # `python -m grpc_tools.protoc` adds the well-known types (timestamp.proto).
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}",
         f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
         str(PROTO_ROOT / "dip" / "v1" / "hub.proto")],
        check=True,
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    generate(pathlib.Path(sys.argv[1]))
