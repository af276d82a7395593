"""Generate the Python modules of `miscause.proto` from the .proto files beside this one.

The folder is mapped onto the import path `miscause/proto` for protoc, so the generated modules import
each other as `miscause.proto.<name>_pb2`. `make proto` runs this; a test regenerates into a temporary
folder and compares with the committed modules.

example:
  python -m miscause.proto.generate            # rewrite the modules in place
  python -m miscause.proto.generate --out DIR  # write them to DIR instead
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE_PATH = "miscause/proto"
SUFFIXES = ("_pb2.py", "_pb2_grpc.py")


def proto_files() -> list[Path]:
    """The protocol's .proto sources, sorted."""
    return sorted(HERE.glob("*.proto"))


def generated_names() -> list[str]:
    """The file names protoc writes for the sources."""
    return [source.stem + suffix for source in proto_files() for suffix in SUFFIXES]


def generate(out: Path) -> list[Path]:
    """Run protoc (grpcio-tools) on every .proto file here; the modules land in `out`, flat."""
    import grpc_tools
    from grpc_tools import protoc

    includes = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        args = ["protoc", f"-I{PACKAGE_PATH}={HERE}", f"-I{includes}", f"--python_out={scratch}",
                f"--grpc_python_out={scratch}"]
        args += [f"{PACKAGE_PATH}/{source.name}" for source in proto_files()]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {', '.join(p.name for p in proto_files())}")
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name in generated_names():
            target = out / name
            shutil.copyfile(Path(scratch) / PACKAGE_PATH / name, target)
            written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the modules to")
    for path in generate(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
