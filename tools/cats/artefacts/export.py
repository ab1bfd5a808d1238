"""Per-node artefacts: a NodeManifest (proto/cats.proto) and an aligned weight blob per node.

Layout of an export directory::

    partition.json          summary (hash, config, nodes, pruning ratio, scales) for humans/tools
    node-<d>/manifest.pb    NodeManifest, deterministic protobuf encoding
    node-<d>/weights.bin    tensors in manifest order, each at a multiple of ALIGNMENT bytes

The partition hash covers every node's manifest (without the hash field) and blob, so a node
can refuse frames and artefacts of any other partition. Writing is byte-identical on rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cats.model.config import ModelConfig, preset
from cats.model.partition import Partition
from cats.model.transformer import CatsModel
from cats.quant import qref
from cats.wire.proto import pb

FORMAT_VERSION = 1
ALIGNMENT = 16  # bytes; covers int32 loads and the M4's word-aligned SIMD reads
_DTYPES = {
    np.dtype(np.int8): "DTYPE_INT8",
    np.dtype(np.int32): "DTYPE_INT32",
    np.dtype(np.uint16): "DTYPE_UINT16",
}
_SPACES = {
    "model": "SPACE_MODEL",
    "hidden": "SPACE_HIDDEN",
    "output": "SPACE_OUTPUT",
    "input": "SPACE_INPUT",
    "in_hidden": "SPACE_IN_HIDDEN",
    "head_hidden": "SPACE_HEAD_HIDDEN",
}


class ArtefactError(ValueError):
    """A manifest or blob that is corrupted, inconsistent or from another partition."""


def _enum(enum_name: str, value: str) -> int:
    return getattr(pb(), enum_name).Value(value)


def shape_to_proto(cfg: ModelConfig):
    return pb().ModelShape(
        task=_enum("Task", f"TASK_{cfg.task.upper()}"),
        features=cfg.features, heads=cfg.heads, blocks=cfg.blocks, ffn=cfg.ffn,
        patch=cfg.patch, context=cfg.context, horizon=cfg.horizon, n_classes=cfg.n_classes,
        activation=_enum("Activation", f"ACTIVATION_{cfg.activation.upper()}"), ln_eps=cfg.ln_eps,
        image_width=cfg.image_width, io=_enum("IoBlocks", f"IO_{cfg.io.upper()}"),
        io_hidden=cfg.io_hidden if cfg.io == "paper" else 0,  # a lean manifest is unchanged
    )  # fmt: skip


def shape_from_proto(shape) -> ModelConfig:
    p = pb()
    return ModelConfig(
        task=p.Task.Name(shape.task).removeprefix("TASK_").lower(),
        features=shape.features, heads=shape.heads, blocks=shape.blocks, ffn=shape.ffn,
        patch=shape.patch, context=shape.context, horizon=shape.horizon,
        n_classes=shape.n_classes,
        activation=p.Activation.Name(shape.activation).removeprefix("ACTIVATION_").lower(),
        ln_eps=float(str(np.float32(shape.ln_eps))),  # shortest float32 repr
        image_width=shape.image_width,
        io=p.IoBlocks.Name(shape.io).removeprefix("IO_").lower(),
        **({"io_hidden": shape.io_hidden} if shape.io == p.IO_PAPER else {}),
    )  # fmt: skip


def pack_blob(params: dict[str, np.ndarray]) -> tuple[bytes, list]:
    """Tensors back to back, little endian, each aligned; returns the blob and TensorRefs."""
    out = bytearray()
    refs = []
    for name, arr in params.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype not in _DTYPES:
            raise TypeError(f"tensor {name} has unsupported dtype {arr.dtype}")
        out += b"\0" * (-len(out) % ALIGNMENT)
        data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        refs.append(
            pb().TensorRef(
                name=name,
                dtype=_enum("DType", _DTYPES[arr.dtype]),
                shape=list(arr.shape),
                offset=len(out),
                nbytes=len(data),
            )
        )
        out += data
    return bytes(out), refs


def unpack_blob(blob: bytes, refs) -> dict[str, np.ndarray]:
    by_enum = {_enum("DType", v): k for k, v in _DTYPES.items()}
    params = {}
    for ref in refs:
        dt = by_enum.get(ref.dtype)
        if dt is None:
            raise ArtefactError(f"tensor {ref.name}: unknown dtype {ref.dtype}")
        count = int(np.prod(ref.shape, dtype=np.int64))
        if ref.nbytes != count * dt.itemsize or ref.offset % ALIGNMENT:
            raise ArtefactError(f"tensor {ref.name}: size/alignment does not match its shape")
        if ref.offset + ref.nbytes > len(blob):
            raise ArtefactError(f"tensor {ref.name} runs past the end of the blob")
        arr = np.frombuffer(blob, dtype=dt.newbyteorder("<"), count=count, offset=ref.offset)
        params[ref.name] = arr.astype(dt).reshape(tuple(ref.shape))
    return params


def node_manifest(spec: qref.NodeSpec, refs: list, blob: bytes, qm: qref.QModel, ratio: float):
    p = pb()
    man = p.NodeManifest(
        format_version=FORMAT_VERSION, node_id=spec.node, nodes=spec.nodes,
        model=shape_to_proto(spec.cfg), alignment=ALIGNMENT, blob_size=len(blob),
        blob_sha256=hashlib.sha256(blob).digest(), input_scale=qm.input_scale,
        output_scale=qm.output_scale, pruning_ratio=ratio,
    )  # fmt: skip
    for space, (a, b) in spec.ranges.items():
        man.ranges.add(space=_enum("Space", _SPACES[space]), start=a, end=b)
    for ex in spec.exchanges:
        man.exchanges.add(
            index=ex.index, block=ex.block, kind=ex.kind, space=_enum("Space", _SPACES[ex.space]),
            rows=ex.rows, kept_cols=ex.kept_cols.tolist(), held_cols=ex.held_cols.tolist(),
        )  # fmt: skip
    man.tensors.extend(refs)
    return man


def spec_from_manifest(man) -> qref.NodeSpec:
    cfg = shape_from_proto(man.model)
    spaces = {v: k for k, v in _SPACES.items()}
    names = pb().Space.Name
    ranges = {spaces[names(r.space)]: (r.start, r.end) for r in man.ranges}
    exs = tuple(
        qref.ExchangeLayout(ex.index, ex.block, ex.kind, spaces[names(ex.space)], ex.rows,
                            np.array(ex.kept_cols, dtype=np.int64),
                            np.array(ex.held_cols, dtype=np.int64))
        for ex in man.exchanges
    )  # fmt: skip
    return qref.NodeSpec(cfg, man.node_id, man.nodes, ranges, exs)


def _hash_partition(manifests: list, blobs: list[bytes]) -> bytes:
    """sha256 over every node's manifest (minus the hash itself) and blob: the manifests carry
    the model shape and all kept sets, the blobs all weights."""
    h = hashlib.sha256(b"cats-partition-v1")
    for man, blob in zip(manifests, blobs, strict=True):
        unhashed = type(man)()
        unhashed.CopyFrom(man)
        unhashed.ClearField("partition_hash")
        h.update(hashlib.sha256(unhashed.SerializeToString(deterministic=True)).digest())
        h.update(hashlib.sha256(blob).digest())
    return h.digest()


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def export_partition(qm: qref.QModel, part: Partition, out: Path) -> dict[str, Any]:
    """Write every node's manifest + blob and partition.json; returns the summary."""
    part.validate()
    if part.cfg != qm.cfg:
        raise ValueError("partition and quantised model have different configurations")
    out = Path(out)
    ratio = part.pruning_ratio()
    manifests, blobs = [], []
    for d in range(part.nodes):
        spec = qref.NodeSpec.from_partition(part, d)
        blob, refs = pack_blob(qref.node_params(qm, spec))
        manifests.append(node_manifest(spec, refs, blob, qm, ratio))
        blobs.append(blob)
    digest = _hash_partition(manifests, blobs)
    nodes = []
    for d, (man, blob) in enumerate(zip(manifests, blobs, strict=True)):
        man.partition_hash = digest
        node_dir = out / f"node-{d}"
        node_dir.mkdir(parents=True, exist_ok=True)
        _write(node_dir / "manifest.pb", man.SerializeToString(deterministic=True))
        _write(node_dir / "weights.bin", blob)
        nodes.append({"node": d, "blob_bytes": len(blob), "tensors": len(man.tensors)})
    summary = {
        "format_version": FORMAT_VERSION,
        "partition_hash": digest.hex(),
        "config": part.cfg.to_dict(),
        "nodes": part.nodes,
        "pruning_ratio": ratio,
        "input_scale": qm.input_scale,
        "output_scale": qm.output_scale,
        "node_files": nodes,
    }
    _write(out / "partition.json", (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return summary


@dataclass
class LoadedNode:
    spec: qref.NodeSpec
    params: dict[str, np.ndarray]
    manifest: Any

    def runtime(self) -> qref.Node:
        return qref.Node(self.spec, self.params)


def load_node(node_dir: Path) -> LoadedNode:
    """Read and verify one node's manifest and blob."""
    node_dir = Path(node_dir)
    man_path, blob_path = node_dir / "manifest.pb", node_dir / "weights.bin"
    for path in (man_path, blob_path):
        if not path.is_file():
            raise FileNotFoundError(f"missing artefact {path}")
    man = pb().NodeManifest()
    try:
        man.ParseFromString(man_path.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError (a plain Exception subclass)
        raise ArtefactError(f"{man_path}: not a valid NodeManifest ({exc})") from None
    if man.format_version != FORMAT_VERSION:
        raise ArtefactError(f"{man_path}: format version {man.format_version}, "
                            f"this tool reads {FORMAT_VERSION}")  # fmt: skip
    blob = blob_path.read_bytes()
    if len(blob) != man.blob_size or hashlib.sha256(blob).digest() != man.blob_sha256:
        raise ArtefactError(f"{blob_path}: blob does not match its manifest (corrupted or swapped)")
    try:
        spec = spec_from_manifest(man)
        params = unpack_blob(blob, man.tensors)
    except (KeyError, ValueError) as exc:
        raise ArtefactError(f"{man_path}: inconsistent manifest ({exc})") from None
    return LoadedNode(spec, params, man)


def load_partition(directory: Path) -> list[LoadedNode]:
    """Load every node of an export and check they form one partition (same hash, ids 0..D-1,
    and the hash recomputed from the files)."""
    directory = Path(directory)
    node_dirs = sorted(directory.glob("node-*"), key=lambda p: int(p.name.split("-")[1]))
    if not node_dirs:
        raise FileNotFoundError(f"no node-<d> directories in {directory}")
    nodes = [load_node(p) for p in node_dirs]
    first = nodes[0].manifest
    ids = [n.manifest.node_id for n in nodes]
    if ids != list(range(first.nodes)):
        raise ArtefactError(f"{directory}: node ids {ids}, expected 0..{first.nodes - 1}")
    for n in nodes:
        if n.manifest.partition_hash != first.partition_hash or n.manifest.nodes != first.nodes:
            raise ArtefactError(f"node {n.manifest.node_id} belongs to another partition "
                                f"({n.manifest.partition_hash.hex()[:12]} vs "
                                f"{first.partition_hash.hex()[:12]})")  # fmt: skip
    partition_from_specs([n.spec for n in nodes])  # validates the kept sets
    digest = _hash_partition([n.manifest for n in nodes],
                             [(p / "weights.bin").read_bytes() for p in node_dirs])  # fmt: skip
    if digest != first.partition_hash:
        raise ArtefactError(f"{directory}: partition hash does not match the files")
    return nodes


def partition_from_specs(specs: list[qref.NodeSpec]) -> Partition:
    """Rebuild the Partition (kept sets) from the nodes' manifests."""
    part = Partition.full(specs[0].cfg, len(specs))
    for e in range(len(part.kept)):
        part.kept[e][:] = False
        for spec in specs:
            part.kept[e][spec.exchanges[e].kept_cols] = True
    part.validate()
    return part


# ------------------------------------------------------------------------------------------------
# Building the quantised model to export
# ------------------------------------------------------------------------------------------------


def synthetic_calibration(cfg: ModelConfig, seed: int, batch: int = 64) -> torch.Tensor:
    """Seeded random-walk-plus-seasonality series (B, context) for models with no data at hand
    (untrained presets for tests and benchmarks)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(cfg.context, dtype=torch.float32)
    period = 8 + 40 * torch.rand(batch, 1, generator=g)
    season = torch.sin(2 * torch.pi * t / period + 6.3 * torch.rand(batch, 1, generator=g))
    return season + 0.1 * torch.randn(batch, cfg.context, generator=g).cumsum(1)


def untrained(preset_name: str, seed: int, **overrides: Any) -> tuple[CatsModel, qref.QModel]:
    """A preset's randomly initialised model, calibrated on synthetic series, quantised."""
    torch.manual_seed(seed)
    model = CatsModel(preset(preset_name, **overrides))
    qref.calibrate(model, model.normalise(synthetic_calibration(model.cfg, seed))[0])
    return model, qref.quantize(model)
