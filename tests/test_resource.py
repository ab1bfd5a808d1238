"""Resource model: per-node RAM / flash / air, the fragmenter, fitting and the scale ratio."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cats.analysis import resource
from cats.analysis.resource import (
    BLE2M,
    IEEE802154,
    Layout,
    Limits,
    air,
    encode_frames,
    fits,
    flash_breakdown,
    fragment,
    kept_count,
    largest_fitting,
    layout,
    matrix_count,
    node_resources,
    param_count,
    ram_breakdown,
    scale_ratios,
    stored_params,
)
from cats.commands import cli
from cats.firmware import cnode
from cats.model.config import preset
from cats.model.partition import Partition
from cats.model.transformer import CatsModel

VT = preset("verytiny")


@pytest.mark.parametrize("name", ["verytiny", "demo", "test"])
def test_param_count_matches_torch(name: str) -> None:
    for task in ("forecast", "classify"):
        cfg = preset(name, task=task)
        m = CatsModel(cfg)
        assert param_count(cfg) == sum(p.numel() for p in m.parameters())
        named = m.named_parameters()
        mats = sum(p.numel() for n, p in named if n.endswith("weight") and p.ndim == 2)
        assert matrix_count(cfg) == mats


def test_verytiny_single_device_numbers() -> None:
    lay = layout(VT, 1, method="single")
    fl = flash_breakdown(lay)
    # one device stores every matrix entry once, as int8
    assert int(fl["weights"][0, 0]) == matrix_count(VT) == 604_160
    # peak: X + LN1 buffer + Q, K, V = 5 x N x F int8, and the matmul scratch: one token pair
    # (2 x 128 int16) + the weight rows of 16 outputs (16 x 128 int16) + 24 bytes per output
    ram = ram_breakdown(lay)
    mm = 4 * 128 + 16 * (2 * 128 + 24)
    assert int(resource.matmul_scratch_bytes(128, 128)) == mm == 4992
    assert int(ram["arena"][0, 0]) == 5 * 32 * 128 + mm
    assert ram["peak_phase"][0, 0] == "b0.qkv"
    # + the runtime's own RAM: measured on the Zephyr node images (bench/image_size)
    assert int(ram["total"][0, 0]) == 5 * 32 * 128 + mm + 2 * 127 + resource.RUNTIME_RAM_BYTES
    assert air(lay)["payload_bytes"].tolist() == [0]


@pytest.mark.parametrize("nodes", [2, 3, 8, 16])
def test_flash_p0_covers_model_weights(nodes: int) -> None:
    lay = layout(VT, nodes, 0.0)
    fl = flash_breakdown(lay)
    # at p = 0 every node stores full rows of its own columns: exactly the int8 model, no more
    assert int(fl["weights"].sum()) == matrix_count(VT)
    assert int(fl["total"].sum()) >= matrix_count(VT) + nodes * resource.CODE_BYTES
    assert int(stored_params(lay)[0]) == param_count(VT)
    # pruning removes remote rows: strictly fewer stored weights
    assert int(flash_breakdown(layout(VT, nodes, 0.5))["weights"].sum()) < matrix_count(VT)


def test_kept_count() -> None:
    assert kept_count([8, 8, 8, 1, 0], 0.5).tolist() == [4, 4, 4, 1, 0]
    assert kept_count([8], 0.9).tolist() == [1]
    assert kept_count([8], 0.3).tolist() == [6]
    assert kept_count([10], 0.0).tolist() == [10]


@pytest.mark.parametrize("nodes", [2, 4, 8, 16])
def test_air_allgather_vs_cats(nodes: int) -> None:
    ag = node_resources(VT, nodes, method="allgather")
    c0 = node_resources(VT, nodes, 0.0)
    assert ag["per_node"]["air_payload_bytes"] == c0["per_node"]["air_payload_bytes"]
    # AllGather payload: every own column, N rows per block exchange, 1 row for the head
    own = [b - a for a, b in Partition.full(VT, nodes).plan.ranges["model"]]
    want = [(4 * VT.blocks * VT.tokens + 1) * w for w in own]
    assert ag["per_node"]["air_payload_bytes"] == want
    for p in (0.3, 0.5, 0.7, 0.9):
        c = node_resources(VT, nodes, p)
        assert c["total"]["air_payload_bytes"] < ag["total"]["air_payload_bytes"]
        assert c["total"]["air_bytes_on_air"] < ag["total"]["air_bytes_on_air"]
        ratio = c["total"]["air_payload_bytes"] / ag["total"]["air_payload_bytes"]
        kept = kept_count(np.array(own), p).sum() / sum(own)
        assert ratio == pytest.approx(kept, rel=1e-9)  # exactly the kept fraction
        assert 1 - p <= ratio < 1 - p + 1 / min(own) + 1e-9  # ceil((1-p) w) / w


def test_air_scales_with_one_minus_p() -> None:
    ag = node_resources(VT, 4, method="allgather")["total"]["air_payload_bytes"]
    for p in (0.25, 0.5, 0.75):
        c = node_resources(VT, 4, p)["total"]["air_payload_bytes"]
        assert c / ag == pytest.approx(1 - p, abs=0.01)


def test_more_nodes_less_per_node() -> None:
    one = node_resources(VT, 1, method="single")["max"]
    for method, p in (("allgather", 0.0), ("cats", 0.5)):
        sixteen = node_resources(VT, 16, p, method)["max"]
        assert sixteen["ram_bytes"] < one["ram_bytes"]
        assert sixteen["flash_bytes"] < one["flash_bytes"] / 4


def test_ram_peak_accounts_for_receive_buffers() -> None:
    lay = layout(VT, 8, 0.5)
    ram = ram_breakdown(lay)
    held0 = int(lay.held[0, 0, 0])
    assert held0 == 16 + 7 * 8  # own 16 + 7 nodes x 8 kept
    assert ram["peak_phase"][0, 0] == "b0.qkv"
    mm = 4 * held0 + 16 * (2 * held0 + 24)  # matmul scratch: 72 inputs, 16 outputs
    assert int(ram["arena"][0, 0]) == 32 * (16 + held0 + 3 * 16) + mm
    t = ram["peak_terms"]
    assert int(t["receive"][0, 0]) == 32 * held0 and int(t["qkv"][0, 0]) == 3 * 32 * 16
    assert int(t["matmul"][0, 0]) == mm


def test_matmul_scratch_matches_the_c_macro() -> None:
    """resource.matmul_scratch_bytes mirrors CATS_MATMUL_SCRATCH_BYTES (cats_kernels.h)."""
    lib = cnode.lib()
    for n_in in (1, 3, 4, 16, 72, 128, 129):
        for n_out in (1, 2, 5, 16, 17, 96, 128):
            want = lib.cats_matmul_s8_scratch_bytes(n_in, n_out)
            assert int(resource.matmul_scratch_bytes(n_in, n_out)) == want, (n_in, n_out)
    assert int(resource.matmul_scratch_bytes(128, 0)) == 0  # no outputs: no matmul runs


def test_fits() -> None:
    assert fits(VT, 1, method="single")
    assert fits(VT, 16, 0.5)
    huge = VT.replace(features=2048, ffn=8192, blocks=48)
    assert not fits(huge, 16, 0.9)
    assert not fits(huge, 1, method="single")
    tight = Limits(ram_bytes=32 * 1024)
    assert not fits(VT, 1, method="single", limits=tight)  # 5 x 4 KiB + 24 KiB runtime > 32 KiB


def _check_frames(plan, e, rows, link) -> None:
    ids = [c for fp in plan for c in fp.column_ids]
    values = {c: np.random.default_rng(c).integers(-128, 128, rows) for c in ids}
    frames = encode_frames(plan, e, values)
    assert [len(f) for f in frames] == [fp.encoded_len for fp in plan]
    assert max(len(f) for f in frames) <= link.column_mtu
    from cats.wire.proto import pb

    got = {c: bytearray(rows) for c in values}
    for f in frames:
        msg = pb().ColumnFrame.FromString(f)
        assert msg.exchange == e
        fp = plan[msg.fragment]  # v2: the columns and rows come from the plan
        n = fp.row_stop - fp.row_start
        for j, c in enumerate(fp.column_ids):
            got[c][fp.row_start : fp.row_stop] = msg.payload[j * n : (j + 1) * n]
    for c, v in values.items():
        assert bytes(got[c]) == v.astype(np.int8).tobytes()


@pytest.mark.parametrize("link", [IEEE802154, BLE2M])
@pytest.mark.parametrize("rows", [1, 32, 57, 200, 700])
def test_fragmenter_real_encoding(link, rows: int) -> None:
    ids = list(range(100, 180))  # ids crossing the 1 -> 2 byte varint boundary
    for e in (0, 3, 200):
        plan = fragment(e, ids, rows, link)
        assert sum(fp.payload_bytes for fp in plan) == rows * len(ids)
        _check_frames(plan, e, rows, link)


def test_fragmenter_packing_verytiny() -> None:
    # 32-token columns: the v2 header budget is 9 B, so three whole columns (96 B) per
    # ColumnFrame, with or without the 8-byte MIC (a 116-byte 802.15.4 MAC payload less the
    # AirType byte: 115, 107 with the MIC)
    for mic in (0, 8):
        plan = fragment(5, range(24, 32), 32, IEEE802154, mic)
        assert [len(fp.column_ids) for fp in plan] == [3, 3, 2]
        assert all(fp.encoded_len <= 115 - mic for fp in plan)
    ble = fragment(5, range(24, 40), 32, BLE2M)
    assert [len(fp.column_ids) for fp in ble] == [7, 7, 2]
    # a column that does not fit on its own is split into row chunks
    split = fragment(5, [7], 300, IEEE802154)
    assert len(split) == 3 and all(fp.column_ids == (7,) for fp in split)
    assert split[0].row_start == 0 and split[-1].row_stop == 300


def test_air_counts_every_frame_fits_mtu() -> None:
    lay = layout(VT, 16, 0.5)
    a = air(lay)
    total = 0
    for e in range(lay.kept.shape[1]):
        plan = fragment(e, lay.kept_ids(e, 15), int(lay.rows[e]))
        _check_frames(plan, e, int(lay.rows[e]), IEEE802154)
        total += len(plan)
    assert a["frames"][15] == total
    # per frame: AirType 1 + ColumnFrame + SHR/PHR 6 + MHR 9 + FCS 2, at 32 us per byte
    lens = [
        fp.encoded_len
        for e in range(lay.kept.shape[1])
        for fp in fragment(e, lay.kept_ids(e, 15), int(lay.rows[e]))
    ]
    assert a["bytes_on_air"][15] == sum(1 + n + 17 for n in lens)
    assert a["tx_time_ms"][15] == pytest.approx(sum((1 + n + 17) * 32e-3 for n in lens))


def test_layout_from_partition_matches_synthetic() -> None:
    part = Partition.full(VT, 8)
    rng = np.random.default_rng(0)
    for e, ex in enumerate(part.schedule):
        for a, b in part.plan.ranges[ex.space]:
            k = int(kept_count(b - a, 0.5))
            keep = np.zeros(b - a, dtype=bool)
            keep[rng.choice(b - a, k, replace=False)] = True
            part.kept[e][a:b] = keep
    exact = Layout.from_partition(part)
    synth = layout(VT, 8, 0.5)
    assert np.array_equal(exact.held, synth.held)
    assert np.array_equal(flash_breakdown(exact)["total"], flash_breakdown(synth)["total"])
    r_exact = node_resources(VT, 8, partition=part)
    r_synth = node_resources(VT, 8, 0.5)
    assert r_exact["per_node"]["air_payload_bytes"] == r_synth["per_node"]["air_payload_bytes"]


def test_largest_fitting_is_tight() -> None:
    s = largest_fitting(1)
    assert s is not None and s.params == s.nominal_params
    cfg = VT.replace(features=s.features, ffn=s.features, blocks=s.blocks)
    assert fits(cfg, 1, method="single")
    assert not fits(cfg.replace(blocks=s.blocks + 1), 1, method="single")
    assert s.params == param_count(cfg)
    # it beats the paper model, which also fits one node
    assert s.params > param_count(VT) and fits(VT, 1, method="single")


def test_scale_ratio() -> None:
    ratio, detail, by_p = scale_ratios(range(1, 17), (0.0, 0.5))
    assert list(ratio) == [str(d) for d in range(1, 17)]
    assert ratio["1"] == 1.0
    vals = [ratio[str(d)] for d in range(1, 17)]
    assert all(b >= a for a, b in zip(vals, vals[1:], strict=False))
    assert 12 < ratio["16"] < 20  # the paper reports 14x at 16 nodes
    assert ratio["8"] > 6
    d16 = detail["16"]
    cfg = VT.replace(features=d16["features"], ffn=d16["features"], blocks=d16["blocks"])
    assert fits(cfg, d16["nodes_used"], d16["p"])
    assert not fits(cfg, 1, method="single")
    assert by_p["0"]["16"] > 12


def test_cli_report_json(capsys, monkeypatch) -> None:
    # other subcommand modules may not exist yet in a partial checkout
    available = tuple(n for n in cli.COMMANDS if importlib.util.find_spec(n) is not None)
    monkeypatch.setattr(cli, "COMMANDS", available)
    assert cli.main(["report", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["scale_ratio"]) == {str(d) for d in range(1, 17)}
    assert {"config", "limits", "link", "rows", "scale_detail"} <= set(out)
    assert (out["link"]["name"], out["link"]["column_mtu"]) == ("ieee802154", 115)
    methods = {(r["method"], r["nodes"], r["p"]) for r in out["rows"]}
    assert ("single", 1, 0.0) in methods and ("allgather", 16, 0.0) in methods
    assert ("cats", 8, 0.5) in methods
    row = next(r for r in out["rows"] if (r["method"], r["nodes"], r["p"]) == ("cats", 16, 0.5))
    assert len(row["per_node"]["ram_bytes"]) == 16 and row["fits"]
    assert row["max"]["ram_bytes"] == max(row["per_node"]["ram_bytes"])


def test_cli_report_table(capsys, monkeypatch) -> None:
    available = tuple(n for n in cli.COMMANDS if importlib.util.find_spec(n) is not None)
    monkeypatch.setattr(cli, "COMMANDS", available)
    # a tight RAM budget (the runtime alone takes ~55 KiB of a Zephyr node image): some
    # configurations do not fit
    args = ["report", "--nodes", "1,4", "--p", "0.5", "--link", "ble2m", "--ram-kib", "64"]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "scale ratio" in text and "allgather" in text and "NO" in text


def test_links_come_from_one_light_module() -> None:
    """The radio link facts are cats.wire.phy's alone: the resource model's links are its PHY
    objects (a stdlib-only module of the wire layer), and importing cats.analysis.resource /
    cats.artefacts.frames pulls in none of the simulator (medium, swarm, asyncio)."""
    from cats.wire import phy

    assert resource.LINKS is phy.PHYS and resource.IEEE802154 is phy.IEEE802154
    assert resource.BLE2M is phy.BLE2M and resource.BLE2M_AUX is phy.BLE2M_AUX
    tree = ast.parse(Path(phy.__file__).read_text())
    imported = {
        (n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert imported <= {"__future__", "struct", "dataclasses"}, imported
    code = (
        "import sys, cats.analysis.resource, cats.artefacts.frames; "
        "print(sorted(m for m in sys.modules if m.startswith('cats.sim')), "
        "'asyncio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "False"], out.stdout


def test_fixed_costs_are_the_measured_images() -> None:
    """Code size and runtime RAM per node are the largest of the measured nrf52840dk node images
    (flash without weights and manifest, RAM without the arena), not the old estimates."""
    import json

    images = json.loads(resource.IMAGE_SIZES.read_text())["images"]
    assert {r["link"] for r in images} == {"ieee802154", "ble"}
    for r in images:
        assert r["code_bytes"] == r["flash_bytes"] - r["weights_blob"] - r["manifest"]
        assert r["runtime_ram_bytes"] == r["ram_bytes"] - r["arena"]
    assert max(r["code_bytes"] for r in images) == resource.CODE_BYTES
    assert max(r["runtime_ram_bytes"] for r in images) == resource.RUNTIME_RAM_BYTES
    assert resource.FIXED_COSTS_SOURCE.startswith("measured")
    assert resource.Limits().code_bytes == resource.CODE_BYTES
