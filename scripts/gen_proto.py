"""Generate Python code for protos/ddnn/v1/*.proto into ddnn/pb/ (the `make proto` target).

grpc_tools emits absolute imports (`from ddnn.v1 import tensor_pb2`) that would collide with
the `ddnn` package itself, so they are rewritten to `from ddnn.pb.ddnn.v1 import ...`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
OUT = ROOT / "ddnn" / "pb"


def main() -> int:
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    if not files:
        print("no .proto files under protos/", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    include = str(Path(protoc.__file__).parent / "_proto")
    rc = protoc.main(["grpc_tools.protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={OUT}",
                      f"--pyi_out={OUT}", f"--grpc_python_out={OUT}", *files])
    if rc != 0:
        return rc
    for path in OUT.rglob("*.py*"):
        text = path.read_text()
        fixed = re.sub(r"^from ddnn\.v1 import", "from ddnn.pb.ddnn.v1 import", text, flags=re.M)
        if fixed != text:
            path.write_text(fixed)
    for folder in [OUT, *(p for p in OUT.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    print(f"generated {len(files)} proto file(s) into {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
