"""The one place that turns proto/cats.proto into the Python protobuf module.

Every byte that crosses a boundary is defined by proto/cats.proto; the Python side must never
drift from it, so the module is regenerated (in-process, with grpcio-tools' bundled protoc)
whenever the .proto's sha256 differs from the one recorded beside the generated file. Nothing
generated is committed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from cats.base.paths import PROTO_DIR

GENERATED_DIR = Path(__file__).resolve().parents[1] / "_generated"  # tools/cats/_generated
CATS_PROTO = PROTO_DIR / "cats.proto"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _protoc_include_dir() -> Path:
    """grpc_tools ships google/protobuf/*.proto; protoc needs them for well-known types."""
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or spec.origin is None:
        raise RuntimeError("grpcio-tools is not installed; run `make setup`")
    return Path(spec.origin).parent / "_proto"


def _generate(proto: Path, out_dir: Path) -> None:
    """Run protoc into a private temp dir, then move results into place atomically.

    os.replace of each file keeps concurrent pytest workers safe: a reader sees either the old
    or the new file, never a half-written one. The hash file moves last, so a matching hash
    always implies a matching module.
    """
    from grpc_tools import protoc  # imported lazily: only needed when regenerating

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = proto.stem
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".gen-") as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{proto.parent}",
            f"-I{_protoc_include_dir()}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            str(proto),
        ]
        rc = protoc.main(args)
        produced = Path(tmp) / f"{stem}_pb2.py"
        if rc != 0 or not produced.exists():
            raise RuntimeError(
                f"protoc failed (exit {rc}) compiling {proto}; its messages are on stderr above"
            )
        hash_file = Path(tmp) / f"{stem}_pb2.sha256"
        hash_file.write_text(_sha256(proto) + "\n")
        for name in (f"{stem}_pb2.pyi", f"{stem}_pb2.py", hash_file.name):
            src = Path(tmp) / name
            if src.exists():
                os.replace(src, out_dir / name)


def load_proto(proto: Path, out_dir: Path = GENERATED_DIR) -> ModuleType:
    """Generate (if stale) and import `<stem>_pb2` for `proto`; not cached, see `pb()`.

    The module is registered in sys.modules under its plain name `<stem>_pb2`, the name
    protoc's own output uses when one generated file imports another.
    """
    proto = Path(proto).resolve()
    if not proto.is_file():
        raise FileNotFoundError(f"protobuf schema not found: {proto}")
    stem = proto.stem
    module_path = out_dir / f"{stem}_pb2.py"
    hash_path = out_dir / f"{stem}_pb2.sha256"
    want = _sha256(proto)
    have = hash_path.read_text().strip() if hash_path.exists() else None
    if not module_path.exists() or have != want:
        _generate(proto, out_dir)

    name = f"{stem}_pb2"
    spec = importlib.util.spec_from_file_location(name, module_path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import generated module {module_path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(name, None)
        raise
    return module


@functools.cache
def pb() -> ModuleType:
    """The `cats_pb2` module generated from proto/cats.proto (generated on first use)."""
    return load_proto(CATS_PROTO)
