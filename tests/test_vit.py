"""The ViT image classifier (`vit-digits` preset): bundled data, patch layout, DESIGN.md
invariant, qref == C bit-exact, training and the simulated swarm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cats.artefacts import export
from cats.model.config import ModelConfig, preset
from cats.model.partition import Partition
from cats.model.swarm_float import simulate as simulate_float
from cats.model.transformer import CatsModel
from cats.quant import qref
from cats.training import data as datamod

pytest.importorskip("sklearn", reason="the digits ship in the scikit-learn wheel")


def _vit(seed: int = 0, **overrides) -> CatsModel:
    torch.manual_seed(seed)
    m = CatsModel(preset("vit-digits", **overrides)).double().eval()
    with torch.no_grad():  # break the symmetric init so LayerNorm gains/biases matter
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def digits() -> tuple[datamod.ImageSet, ...]:
    return datamod.image_dataset("digits", (8, 8))


def test_bundled_digits_load_with_a_fixed_stratified_split(digits) -> None:
    images, labels = datamod.load_digits_images()
    assert images.shape == (1797, 64) and images.dtype == np.float32
    assert images.min() == 0 and images.max() == 16
    assert np.array_equal(np.unique(labels), np.arange(10))
    train, val, test = digits
    assert (len(train), len(val), len(test)) == (1078, 359, 360)
    for part in digits:  # every class in every part, in proportion
        counts = part.class_counts()
        assert counts.min() > 0.15 * len(part) / 10
    # disjoint and covering: every image exactly once (compare pixel rows + label)
    rows = np.concatenate([np.c_[p.images, p.labels] for p in digits])
    assert len(np.unique(rows, axis=0)) == len(np.unique(np.c_[images, labels], axis=0))
    again = datamod.image_dataset(None, (8, 8))
    for a, b in zip(digits, again, strict=True):
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    x, y = test.batch(np.array([3, 0]))
    assert x.shape == (2, 64) and np.array_equal(y, test.labels[[3, 0]])
    with pytest.raises(ValueError, match="pixels"):
        datamod.image_dataset("digits", (16, 16))
    with pytest.raises(ValueError, match="unknown image data set"):
        datamod.image_dataset("cifar", (8, 8))


def test_patch_order_cuts_square_patches_in_raster_order() -> None:
    cfg = preset("vit-digits")
    assert cfg.tokens == 16 and cfg.image_shape == (8, 8)
    order = cfg.patch_order()
    assert order.shape == (16, 4)
    assert order[0].tolist() == [0, 1, 8, 9]
    assert order[1].tolist() == [2, 3, 10, 11]
    assert order[4].tolist() == [16, 17, 24, 25]
    assert order[15].tolist() == [54, 55, 62, 63]
    assert sorted(order.ravel().tolist()) == list(range(64))
    # 4 x 4 patches of a 12 x 8 image: 3 x 2 tokens
    big = ModelConfig(task="classify", patch=16, context=96, image_width=8, n_classes=2)
    assert big.tokens == 6 and big.patch_order()[1, :5].tolist() == [4, 5, 6, 7, 12]
    # a series keeps consecutive runs
    assert np.array_equal(preset("test").patch_order().ravel(), np.arange(64))
    ModelConfig(task="classify", patch=4, context=60, image_width=6)  # 10 x 6 pixels: valid
    for bad in (
        dict(patch=8, context=64, image_width=8),  # a patch that is not a square
        dict(patch=9, context=63, image_width=7),  # width not a multiple of the patch side
        dict(patch=4, context=56, image_width=8),  # height 7 not a multiple of the side
    ):
        with pytest.raises(ValueError, match="image"):
            ModelConfig(task="classify", **bad)
    with pytest.raises(ValueError, match="needs task 'classify'"):
        ModelConfig(task="forecast", patch=4, context=64, image_width=8)


def test_gateway_layout_matches_the_model(digits) -> None:
    """`cats sim`'s gateway side (revin_int8) cuts the image exactly as CatsModel.normalise."""
    from cats.sim.run import revin_int8

    m = _vit().float()
    x, _ = digits[2].batch(np.arange(5))
    patches = m.normalise(torch.from_numpy(x))[0].numpy()
    z = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    assert np.allclose(patches[:, 1], z[:, [2, 3, 10, 11]], atol=1e-6)
    q, _, _ = revin_int8(m.cfg, x, 0.05)
    assert np.array_equal(q, qref.quantize_input(patches, 0.05))


@pytest.mark.parametrize("nodes", [1, 2, 4, 8])
def test_vit_partitioned_equals_monolithic(digits, nodes: int) -> None:
    m = _vit()
    x, _ = digits[2].batch(np.arange(4))
    p = m.normalise(torch.from_numpy(x).double())[0]
    part = Partition.full(m.cfg, nodes)
    with torch.no_grad():
        mono = m.core(p).numpy()
        vec = m.core(p, part).numpy()
    assert mono.shape == (4, 10)
    assert np.abs(vec - mono).max() <= 1e-5
    assert np.abs(simulate_float(m, part, p.numpy()) - mono).max() <= 1e-5


@pytest.fixture(scope="module")
def vit_int8(digits):
    m = _vit(seed=3).float()
    qref.calibrate(m, m.normalise(torch.from_numpy(digits[0].images[:256]))[0])
    return m, qref.quantize(m)


def _digit_inputs(m: CatsModel, qm: qref.QModel, images: np.ndarray) -> np.ndarray:
    return qref.quantize_input(m.normalise(torch.from_numpy(images))[0].numpy(), qm.input_scale)


@pytest.mark.parametrize("nodes", [1, 4, 8])
def test_vit_qref_equals_host_c_bit_exact(digits, vit_int8, tmp_path: Path, nodes: int) -> None:
    from cats.firmware import cnode

    m, qm = vit_int8
    part = Partition.full(m.cfg, nodes)
    rng = np.random.default_rng(nodes)
    if nodes > 1:  # SomeGather pruning: keep ~70 % of every node's columns
        for e, ex in enumerate(part.schedule):
            for d in range(nodes):
                a, b = part.plan.ranges[ex.space][d]
                if b > a:
                    keep = rng.random(b - a) < 0.7
                    keep[rng.integers(b - a)] = True
                    part.kept[e][a:b] = keep
    export.export_partition(qm, part, tmp_path)
    cnodes = cnode.load_swarm(tmp_path)
    inputs = _digit_inputs(m, qm, digits[2].images[:3])
    for i, inp in enumerate(inputs):
        delivery = None
        if nodes > 1 and i:
            delivery = {}
            for e in range(m.cfg.exchanges):
                dm = rng.random((nodes, nodes)) >= 0.2
                np.fill_diagonal(dm, True)
                delivery[e] = dm
        want = qref.run_swarm(qref.build_nodes(qm, part), inp, delivery)
        assert want.shape == (10,)
        got = cnode.run_swarm(cnodes, inp, delivery, inference_id=i)
        assert np.array_equal(got, want)


def test_vit_trains_and_its_export_runs_bit_exact(tmp_path: Path) -> None:
    """A short run with message-dropout and QAT learns the digits well above chance (10 %);
    the checkpoint exports and the reloaded nodes match qref on test images."""
    from cats.model.dropout import DropoutConfig
    from cats.quant.int8 import int8_gap, load_for_export
    from cats.training.train import train_model

    cfg = preset("vit-digits", features=32, heads=4, ffn=32, blocks=1)
    res = train_model(cfg, "digits", nodes=4, steps=120, batch=64, lr=3e-3, qat=True,
                      qat_fraction=0.25, dropout=DropoutConfig(0.1, 0.02, 0.02),
                      progress=False)  # fmt: skip
    m = res.metrics
    assert m["task"] == "classify" and m["windows"]["test"] == 360
    assert m["test_accuracy"] > 0.5, m["test_accuracy"]
    res.save(tmp_path / "run")
    qm, part = load_for_export(tmp_path / "run" / "checkpoint.pt", None)
    gap = int8_gap(res.model, qm, part, res.data.test, max_windows=120)
    assert gap["int8_accuracy"] > 0.5 and abs(gap["gap"]) < 0.1, gap
    export.export_partition(qm, part, tmp_path / "part")
    loaded = export.load_partition(tmp_path / "part")
    assert loaded[0].spec.cfg == cfg
    nodes = [n.runtime() for n in loaded]
    inp = _digit_inputs(res.model, qm, res.data.test.images[:2])
    for x in inp:
        assert np.array_equal(
            qref.run_swarm(nodes, x), qref.run_swarm(qref.build_nodes(qm, part), x)
        )


def test_cats_sim_runs_the_vit_bit_exact(vit_int8, tmp_path: Path) -> None:
    from cats.sim.run import simulate
    from cats.sim.swarm import build_executables

    build_executables()
    _, qm = vit_int8
    export.export_partition(qm, Partition.full(qm.cfg, 4), tmp_path / "part")
    res = simulate(tmp_path / "part", inferences=2, data="digits")
    assert res["ok"] and res["bit_exact"], res
    assert res["dataset"] == "digits" and 0 <= res["accuracy"] <= 1
    lossy = simulate(tmp_path / "part", inferences=1, data="digits", loss=["iid:0.3"], seed=2)
    assert lossy["ok"] and lossy["bit_exact"] and lossy["frames_lost"] > 0, lossy


def test_ros_bridge_codec_lays_out_images_like_cats_sim(digits, vit_int8, tmp_path: Path) -> None:
    """The bridge (numpy only) standardises and patches an image request exactly as `cats sim`
    and the model do, and takes it as [64], [1, 64] or [8, 8]."""
    codec = pytest.importorskip("cats_bridge.codec")
    from cats_bridge.partition_info import PartitionInfo

    from cats.sim.run import revin_int8

    _, qm = vit_int8
    export.export_partition(qm, Partition.full(qm.cfg, 2), tmp_path)
    info = PartitionInfo.from_dir(tmp_path)
    assert info.image_width == 8 and info.tokens == 16
    x = digits[2].images[:6]
    want, mu, sd = revin_int8(qm.cfg, x, info.input_scale)
    for i in range(len(x)):
        for shape in ([64], [1, 64], [8, 8]):
            v = codec.validate(x[i].tolist(), shape, info)
            data, m, s = codec.encode_input(v, info)
            assert data == want[i].tobytes() and (m, s) == (mu[i, 0], sd[i, 0])
        assert codec.output_shape([8, 8], info) == [10]
        assert codec.output_shape([1, 64], info) == [1, 10]
    with pytest.raises(codec.RequestError):
        codec.validate(x[0].tolist(), [4, 16], info)
