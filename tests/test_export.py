"""Per-node artefacts: deterministic, verifiable, and reproducing the in-memory integer swarm."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cats.artefacts import export
from cats.cli import main
from cats.model.partition import Partition
from cats.quant import qref


@pytest.fixture(scope="module")
def untrained():
    return export.untrained("test", seed=3)


@pytest.fixture(scope="module")
def untrained_paper():
    return export.untrained("test", seed=3, io="paper", activation="relu", io_hidden=20)


def _pruned(cfg, nodes: int) -> Partition:
    part = Partition.full(cfg, nodes)
    rng = np.random.default_rng(0)
    for e, ex in enumerate(part.schedule):
        for d in range(nodes):
            a, b = part.plan.ranges[ex.space][d]
            keep = rng.random(b - a) < 0.5
            keep[0] = True
            part.kept[e][a:b] = keep
    return part


def _inputs(model, qm, n: int = 2) -> np.ndarray:
    series = export.synthetic_calibration(model.cfg, seed=77, batch=n)
    return qref.quantize_input(model.normalise(series)[0].numpy(), qm.input_scale)


@pytest.mark.parametrize("io", ["lean", "paper"])
@pytest.mark.parametrize("nodes", [1, 4, 16])
def test_roundtrip_reproduces_in_memory_outputs(
    untrained, untrained_paper, tmp_path: Path, nodes: int, io: str
) -> None:
    model, qm = untrained_paper if io == "paper" else untrained
    part = _pruned(model.cfg, nodes) if nodes > 1 else Partition.full(model.cfg, 1)
    export.export_partition(qm, part, tmp_path)
    loaded = export.load_partition(tmp_path)
    assert [n.spec.node for n in loaded] == list(range(nodes))
    assert (
        export.partition_from_specs([n.spec for n in loaded]).kept[3].tolist()
        == part.kept[3].tolist()
    )
    rng = np.random.default_rng(1)
    dm = {e: rng.random((nodes, nodes)) > 0.2 for e in range(model.cfg.exchanges)}
    for inp in _inputs(model, qm):
        want = qref.run_swarm(qref.build_nodes(qm, part), inp, dm)
        got = qref.run_swarm([n.runtime() for n in loaded], inp, dm)
        assert np.array_equal(want, got)


def test_blob_holds_only_needed_rows(untrained, tmp_path: Path) -> None:
    model, qm = untrained
    part = _pruned(model.cfg, 4)
    export.export_partition(qm, part, tmp_path)
    node = export.load_node(tmp_path / "node-1")
    f = model.cfg.features
    wq = node.params["b0.wq.w"]
    held = part.held_cols(0, 1)
    assert wq.shape == (f // 4, held.size) and held.size < f  # output-major
    assert np.array_equal(wq, qm.t["b0.wq.w"][np.ix_(held, np.arange(f // 4, f // 2))].T)
    for ref in node.manifest.tensors:
        assert ref.offset % export.ALIGNMENT == 0


def test_paper_blocks_store_held_rows_and_own_outputs(untrained_paper, tmp_path: Path) -> None:
    """io = paper: the manifest says so, and each io layer keeps only the rows of the columns
    the node holds in the exchange that feeds it, for its own output columns."""
    model, qm = untrained_paper
    cfg = model.cfg
    part = _pruned(cfg, 4)
    export.export_partition(qm, part, tmp_path)
    node = export.load_node(tmp_path / "node-2")
    assert node.spec.cfg == cfg.replace(dropout=0.0)
    assert "embed.w" not in node.params
    own = {sp: np.arange(*part.plan.ranges[sp][2]) for sp in part.plan.ranges}
    head_in, head_hidden = cfg.exchanges - 2, cfg.exchanges - 1
    for name, e, out in [
        ("in1", 0, "in_hidden"), ("inr", 0, "model"), ("in2", 1, "model"),
        ("head1", head_in, "head_hidden"), ("headr", head_in, "output"),
        ("head", head_hidden, "output"),
    ]:  # fmt: skip
        held = part.held_cols(e, 2)
        assert held.size < part.plan.width(part.schedule[e].space)  # pruned: fewer rows
        want = qm.t[f"{name}.w"][np.ix_(held, own[out])].T
        assert np.array_equal(node.params[f"{name}.w"], want), name
    assert node.params["inr.bias"].shape == (cfg.tokens, own["model"].size)  # + position
    man = node.manifest
    assert man.model.io == export.pb().IO_PAPER and man.model.io_hidden == 20
    assert [ex.kind for ex in man.exchanges][:2] == ["in_x", "in_hidden"]
    assert [ex.rows for ex in man.exchanges][-2:] == [1, 1]


def test_export_is_byte_identical_on_rerun(tmp_path: Path) -> None:
    for run in ("a", "b"):
        assert main(["export", "--preset", "test", "--init-seed", "5", "--nodes", "4",
                     "--out", str(tmp_path / run), "--json"]) == 0  # fmt: skip
    files = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert len(files) == 9
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    summary = json.loads((tmp_path / "a" / "partition.json").read_text())
    man = export.load_node(tmp_path / "a" / "node-2").manifest
    assert man.partition_hash.hex() == summary["partition_hash"]


def test_different_seed_gives_different_hash(tmp_path: Path) -> None:
    hashes = set()
    for seed in (1, 2):
        _, qm = export.untrained("test", seed)
        hashes.add(export.export_partition(qm, Partition.full(qm.cfg, 2), tmp_path / str(seed))[
            "partition_hash"])  # fmt: skip
    assert len(hashes) == 2


def test_corrupted_and_mismatched_artefacts_are_refused(untrained, tmp_path: Path) -> None:
    model, qm = untrained
    export.export_partition(qm, Partition.full(model.cfg, 2), tmp_path / "a")
    export.export_partition(qm, _pruned(model.cfg, 2), tmp_path / "b")
    blob = tmp_path / "a" / "node-0" / "weights.bin"
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(export.ArtefactError, match="blob does not match"):
        export.load_node(tmp_path / "a" / "node-0")
    blob.write_bytes(bytes(data[:-1]))
    with pytest.raises(export.ArtefactError, match="blob does not match"):
        export.load_node(tmp_path / "a" / "node-0")
    (tmp_path / "a" / "node-1" / "manifest.pb").write_bytes(b"\xff\xff\xff garbage")
    with pytest.raises(export.ArtefactError, match="not a valid NodeManifest"):
        export.load_node(tmp_path / "a" / "node-1")
    # a node from another partition mixed in
    mixed = tmp_path / "mixed"
    for d, src in ((0, "b"), (1, "b")):
        (mixed / f"node-{d}").mkdir(parents=True)
        for f in ("manifest.pb", "weights.bin"):
            (mixed / f"node-{d}" / f).write_bytes((tmp_path / src / f"node-{d}" / f).read_bytes())
    export.export_partition(qm, Partition.full(model.cfg, 2), tmp_path / "c")
    for f in ("manifest.pb", "weights.bin"):
        (mixed / "node-1" / f).write_bytes((tmp_path / "c" / "node-1" / f).read_bytes())
    with pytest.raises(export.ArtefactError, match="another partition"):
        export.load_partition(mixed)
    with pytest.raises(FileNotFoundError):
        export.load_partition(tmp_path / "nothing-here")


def test_cli_reports_clear_error(tmp_path: Path, capsys) -> None:
    assert (
        main(["export", "--preset", "nope", "--nodes", "2", "--out", str(tmp_path), "--json"]) == 2
    )
    assert "unknown preset" in json.loads(capsys.readouterr().out)["error"]
