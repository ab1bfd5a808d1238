"""SomeGather ColumnFrames: the fragmentation rule, golden vectors, checked decoding, and the
C engine (somegather.c) against its Python mirror (cats.artefacts.frames), under ASan + UBSan."""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cats.analysis import resource
from cats.artefacts import export, frames
from cats.artefacts.frames import FrameError, RxContext
from cats.model.partition import Partition
from cats.quant import qref
from cats.wire.proto import pb

MTU_154 = frames.MTU_IEEE802154  # 115
MTU_BLE = frames.MTU_BLE2M  # 240
C_MTUS = (26, 32, 40, 107, MTU_154, 232, MTU_BLE, 255)  # test_somegather.c mtus[]

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "frames"
HOST_DIR = ROOT / "cats_zephyr_module" / "host"
ASAN_BUILD = ROOT / "build" / "host-asan"
CORE = ROOT / "cats_zephyr_module" / "src" / "core"


# ----------------------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------------------


def test_mtus_are_the_links() -> None:
    # the radio frame (116 / 241 bytes of MAC payload / AdvData) less the AirType byte
    assert frames.MTU_IEEE802154 == resource.IEEE802154.column_mtu == 115
    assert frames.MTU_BLE2M == resource.BLE2M.column_mtu == 240
    assert (resource.IEEE802154.max_air, resource.BLE2M.max_air) == (116, 241)


def test_limits_match_the_c_engine() -> None:
    opts = {}
    for line in (ROOT / "proto" / "cats.options").read_text().splitlines():
        parts = line.split()
        if parts and parts[0].startswith("cats.ColumnFrame."):
            opts[parts[0].rsplit(".", 1)[1]] = dict(p.split(":") for p in parts[1:])
    assert set(opts) == {"payload"}  # the v2 frame: no column ids
    header = (ROOT / "cats_zephyr_module" / "include" / "cats" / "cats_somegather.h").read_text()
    assert f"#define CATS_SG_FRAME_MAX {frames.FRAME_MAX} " in header
    assert f"#define CATS_SG_INFERENCE_MASK {frames.INFERENCE_ID_MASK:#X}u".replace("0X", "0x") in (
        header
    )
    source = (CORE / "somegather.c").read_text()
    for name, value in (("F_INFERENCE", frames.F_INFERENCE), ("F_EXCHANGE", frames.F_EXCHANGE),
                        ("F_FRAGMENT", frames.F_FRAGMENT), ("F_PAYLOAD", frames.F_PAYLOAD),
                        ("INFERENCE_BUDGET", frames.INFERENCE_BUDGET),
                        ("FRAGMENT_BUDGET", frames.FRAGMENT_BUDGET)):  # fmt: skip
        assert f"#define SG_{name} {value}u" in source, name
    assert f"p->count > {frames.MAX_FRAGMENTS:#x}u" in source
    # the field numbers are the proto's
    fields = {f.name: f.number for f in pb().ColumnFrame.DESCRIPTOR.fields}
    assert fields == {"inference_id": frames.F_INFERENCE, "exchange": frames.F_EXCHANGE,
                      "fragment": frames.F_FRAGMENT, "payload": frames.F_PAYLOAD}  # fmt: skip


def test_lean_header_fits_three_columns_of_32_rows() -> None:
    """802.15.4 with an 8-byte MIC: 107 bytes of ColumnFrame, three 32-row columns per frame."""
    mtu = MTU_154 - frames.MIC_DEFAULT
    assert mtu == 107
    for e in (1, 20, 127):
        assert frames.header_budget(e) == 9
        assert frames.payload_room(e, mtu) == 96
        p = frames.plan(e, range(9), 32, mtu)
        assert [len(fp.column_ids) for fp in p] == [3, 3, 3]
        data = frames.encode_exchange(
            e, list(range(9)), np.zeros((32, 9), np.int8), mtu=mtu, inference_id=0xFFFF
        )
        assert [len(d) for d in data] == [fp.encoded_len for fp in p] and max(map(len, data)) <= mtu
    # the worst case fills the MTU exactly: id 3 + exchange 2 + fragment 3 + tags 3 + length 1
    fp = frames.plan(5, range(6000), 32, mtu)[-1]
    assert fp.fragment >= 128 and fp.encoded_len == 107


def _reassemble(data: list[bytes], kept: list[int], e: int, rows: int, mtu: int) -> dict:
    got: dict[int, bytearray] = {}
    p = frames.plan(e, kept, rows, mtu)
    for f in data:
        msg = frames.decode(f)
        fp = p[msg.fragment]
        n = fp.row_count
        for j, c in enumerate(fp.column_ids):
            buf = got.setdefault(c, bytearray(rows))
            buf[fp.row_start : fp.row_stop] = msg.payload[j * n : (j + 1) * n]
    return {c: bytes(v) for c, v in got.items()}


@pytest.mark.parametrize(
    ("mtu", "rows"),
    [(m, r) for m in (32, 40, MTU_154, MTU_BLE, 255) for r in (1, 8, 32, 57, 200, 700)],
)
def test_plan_real_encoding(mtu: int, rows: int) -> None:
    rng = np.random.default_rng(rows * 1000 + mtu)
    ids = sorted(rng.choice(300, 40, replace=False).tolist())
    for e in (0, 3, 200):
        vals = rng.integers(-128, 128, (rows, len(ids))).astype(np.int8)
        p = frames.plan(e, ids, rows, mtu)
        data = frames.encode_exchange(e, ids, vals, mtu=mtu, inference_id=0xFFFF)
        assert [len(d) for d in data] == [fp.encoded_len for fp in p]
        assert max(len(d) for d in data) <= mtu
        # the fixed parser reads what protobuf writes
        for d in data:
            m = pb().ColumnFrame.FromString(d)
            f = frames.parse(d)
            assert (f.inference_id, f.exchange, f.fragment, f.payload) == (
                m.inference_id, m.exchange, m.fragment, m.payload)  # fmt: skip
        small = frames.encode_exchange(e, ids, vals, mtu=mtu, inference_id=3)
        assert all(len(a) <= len(b) for a, b in zip(small, data, strict=True))
        assert sum(fp.payload_bytes for fp in p) == rows * len(ids)
        got = _reassemble(data, ids, e, rows, mtu)
        assert got == {c: vals[:, j].tobytes() for j, c in enumerate(ids)}
        for fp, d in zip(p, data, strict=True):
            assert frames.decode(d).fragment == fp.fragment
            assert fp.row_count == rows or len(fp.column_ids) == 1


def test_plan_packs_whole_columns_and_splits_only_when_needed() -> None:
    p = frames.plan(5, range(24, 32), 32, MTU_154)  # no MIC: 115 - 9 = 106 -> P = 104
    assert [len(fp.column_ids) for fp in p] == [3, 3, 2]
    assert [len(fp.column_ids) for fp in frames.plan(5, range(24, 40), 32, MTU_BLE)] == [7, 7, 2]
    split = frames.plan(5, [7, 8], 300, MTU_154)
    assert all(len(fp.column_ids) == 1 for fp in split)
    assert [fp.row_start for fp in split if fp.column_ids == (7,)] == [0, 104, 208]
    assert max(fp.row_stop for fp in split if fp.column_ids == (7,)) == 300
    with pytest.raises(ValueError, match="one row"):
        frames.plan(0, [1], 8, 9)
    assert frames.plan(0, [], 8, MTU_154) == [] and frames.plan(0, [1], 0, MTU_154) == []
    with pytest.raises(ValueError, match="frames"):
        frames.plan(1, range(20000), 200, 26)


def test_resource_air_uses_the_plan() -> None:
    lay = resource.layout(resource.PRESETS["verytiny"], 8, 0.5)
    a = resource.air(lay)
    want = sum(
        len(frames.plan(e, lay.kept_ids(e, 3), int(lay.rows[e]), MTU_154))
        for e in range(lay.kept.shape[1])
    )
    assert a["frames"][3] == want


def test_inference_id_goes_on_air_modulo_2_16() -> None:
    d = frames.encode_exchange(0, [4], np.ones((2, 1), np.int8), inference_id=0x12345)
    assert frames.decode(d[0]).inference_id == 0x2345


def test_parser_refuses_what_the_node_refuses() -> None:
    ok = frames.encode_exchange(1, [4], np.ones((2, 1), np.int8), inference_id=7)[0]
    assert frames.parse(ok).payload == b"\x01\x01"
    for bad in (
        bytes([frames.F_EXCHANGE << 3 | 2, 0]) + ok,  # a known field, wrong wire type
        bytes([frames.F_PAYLOAD << 3, 1]) + ok,
        bytes([frames.F_INFERENCE << 3]) + b"\xff" * 5 + b"\x7f" + ok,  # beyond 32 bits
        ok[:-1],  # truncated payload
        b"\x00",  # field 0
        bytes([0x0B]) + ok,  # wire type 3
    ):
        with pytest.raises(FrameError) as err:
            frames.decode(bad)
        assert err.value.reason == "malformed"
    # unknown fields are skipped, as a protobuf decoder does
    assert frames.parse(b"\x08\x05" + ok).payload == b"\x01\x01"
    with pytest.raises(FrameError, match="no payload"):
        frames.decode(bytes([frames.F_EXCHANGE << 3, 1]))


# ----------------------------------------------------------------------------------------------
# Golden vectors
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden():
    desc = json.loads((GOLDEN / "frames.json").read_text())
    loaded = export.load_partition(GOLDEN / "export")
    cfg = loaded[0].spec.cfg
    inp = np.frombuffer((GOLDEN / "input.bin").read_bytes(), np.int8).reshape(cfg.tokens, cfg.patch)
    return desc, loaded, inp


def test_golden_vectors_regenerate(golden) -> None:
    """The checked-in frames are what cats.artefacts.frames encodes from the checked-in export."""
    desc, loaded, _ = golden
    built = frames.golden_frames(GOLDEN)
    assert [f["expect"] for f in built] == [f["expect"] for f in desc["frames"]]
    for b, f in zip(built, desc["frames"], strict=True):
        assert (GOLDEN / f["file"]).read_bytes() == b["data"], f["file"]
        assert f["bytes"] == len(b["data"])
        if f["expect"] == "ok":
            assert f["bytes"] <= f["mtu"]
    split = [f for f in desc["frames"] if f["expect"] == "ok" and f["row_count"] < 8]
    assert split, "the golden set has row-split frames"
    assert {f["link"] for f in desc["frames"] if f["link"]} == {"ieee802154", "ble2m", "tiny"}


def _nodes_at(loaded, inp, e: int) -> list[qref.Node]:
    nodes = [n.runtime() for n in loaded]
    for n in nodes:
        n.begin(inp)
    for _ in range(e):
        for n in nodes:
            n.compute()
    return nodes


def test_python_decodes_and_checks_golden(golden) -> None:
    desc, loaded, inp = golden
    for f in desc["frames"]:
        node = _nodes_at(loaded, inp, f["at"])[desc["receiver"]]
        rx = RxContext.for_node(node, desc["inference_id"], f["mtu"])
        data = (GOLDEN / f["file"]).read_bytes()
        if f["expect"] == "ok":
            msg = frames.decode(data, f["sender"], rx)
            assert list(msg.column_ids) == f["columns"]
            assert (msg.row_start, msg.row_count) == (f["row_start"], f["row_count"])
            assert msg.exchange == f["at"] and msg.fragment == f["fragment"]
        else:
            with pytest.raises(FrameError) as err:
                frames.decode(data, f["sender"], rx)
            assert err.value.reason == f["expect"], f["file"]


def test_python_receiver_counts(golden) -> None:
    desc, loaded, inp = golden
    node = loaded[desc["receiver"]].runtime()
    ok = [f for f in desc["frames"] if f["at"] == 0 and f["link"] == "tiny"]
    rx = frames.Receiver(node, ok[0]["mtu"])
    rx.begin(desc["inference_id"], inp)
    for f in ok:
        assert rx.receive((GOLDEN / f["file"]).read_bytes(), f["sender"])
    cols = {c for f in ok for c in f["columns"]}
    assert rx.stats.columns_received == len(cols) and rx.stats.frames_received == len(ok)
    rx = frames.Receiver(loaded[desc["receiver"]].runtime(), MTU_154 - frames.MIC_DEFAULT)
    rx.begin(desc["inference_id"], inp)
    bad = [f for f in desc["frames"] if f["expect"] not in ("ok",)]
    for f in bad:
        assert not rx.receive((GOLDEN / f["file"]).read_bytes(), f["sender"])
    s = rx.stats.to_dict()
    for reason in frames.REASONS:
        assert s[f"rejected_{reason}"] == sum(f["expect"] == reason for f in bad), reason
    good = [f for f in desc["frames"] if f["at"] == 0 and f["link"] == "ieee802154"]
    assert rx.receive((GOLDEN / good[0]["file"]).read_bytes(), good[0]["sender"])
    assert rx.receive((GOLDEN / good[0]["file"]).read_bytes(), good[0]["sender"])
    assert rx.stats.duplicates == len(good[0]["columns"])


# ----------------------------------------------------------------------------------------------
# In-process swarm over frames (Python)
# ----------------------------------------------------------------------------------------------


class _LossyNode:
    """A qref.Node whose receive() drops the columns lost[e] (per-column loss for run_swarm)."""

    def __init__(self, node: qref.Node, lost: dict[int, set[int]]) -> None:
        self._node = node
        self._lost = lost

    def __getattr__(self, name):
        return getattr(self._node, name)

    def receive(self, exchange: int, cols: np.ndarray, values: np.ndarray) -> None:
        keep = np.array([c not in self._lost[exchange] for c in cols], dtype=bool)
        if keep.any():
            self._node.receive(exchange, cols[keep], values[..., keep])


def _drop(seed: int, p: float):
    def drop(e: int, s: int, i: int, r: int) -> bool:
        return bool(np.random.default_rng([seed, e, s, i, r]).random() < p)

    return drop


def _in_memory(nodes: int, out: Path | None = None):
    """A pruned D-node partition of another untrained model (exported to `out` if given)."""
    model, qm = export.untrained("test", 5)
    part = Partition.full(model.cfg, nodes)
    rng = np.random.default_rng(nodes)
    for e, ex in enumerate(part.schedule):
        for a, b in part.plan.ranges[ex.space]:
            keep = rng.random(b - a) < 0.6
            keep[-1] = True
            part.kept[e][a:b] = keep
    if out is not None:
        export.export_partition(qm, part, out)
    specs = [qref.NodeSpec.from_partition(part, d) for d in range(nodes)]
    params = [qref.node_params(qm, s) for s in specs]
    series = export.synthetic_calibration(model.cfg, seed=9, batch=1)
    inp = frames.qref_input(model, qm, series)
    tag = frames.partition_tag(bytes.fromhex(part.content_hash()))
    return lambda: [qref.Node(s, p) for s, p in zip(specs, params, strict=True)], inp, tag


@pytest.mark.bitexact
@pytest.mark.parametrize(
    "case",
    [("golden", MTU_154, 0.3), ("golden", 32, 0.2), ("golden", MTU_154, 0.0), ("d3", MTU_BLE, 0.4)],
)
def test_swarm_over_frames_python(golden, case) -> None:
    which, mtu, p = case
    if which == "golden":
        desc, loaded, inp = golden
        make = lambda: [n.runtime() for n in loaded]  # noqa: E731
    else:
        make, inp, _ = _in_memory(3)
    receivers = [frames.Receiver(n, mtu) for n in make()]
    out, lost = frames.run_swarm(receivers, inp, 77, _drop(int(p * 100) + mtu, p))
    n_lost = sum(len(v) for per in lost.values() for v in per.values())
    assert (n_lost > 0) == (p > 0)
    ref_nodes = [_LossyNode(n, {e: lost[e][d] for e in lost}) for d, n in enumerate(make())]
    want = qref.run_swarm(ref_nodes, inp)
    assert np.array_equal(out, want)
    assert sum(r.stats.columns_lost for r in receivers) == n_lost
    if p == 0:
        assert np.array_equal(out, qref.run_swarm(make(), inp))
    for r in receivers:
        s = r.stats
        assert s.duplicates == 0 and all(getattr(s, f"rejected_{k}") == 0 for k in frames.REASONS)


# ----------------------------------------------------------------------------------------------
# The C engine under AddressSanitizer + UBSan
# ----------------------------------------------------------------------------------------------


def _core_ready() -> str | None:
    if shutil.which("cmake") is None or shutil.which("cc") is None:
        return "cmake or a C compiler is missing"
    for path in (HOST_DIR / "CMakeLists.txt", CORE / "node.c", CORE / "somegather.c"):
        if not path.is_file():
            return f"{path.relative_to(ROOT)} not written yet"
    return None


@pytest.fixture(scope="module")
def asan_program() -> Path:
    """test_somegather in the sanitizer build (the lock is cats.firmware.cnode.build_host's)."""
    why = _core_ready()
    if why:
        pytest.skip(why)
    ASAN_BUILD.parent.mkdir(parents=True, exist_ok=True)
    configure = ["cmake", "-S", str(HOST_DIR), "-B", str(ASAN_BUILD), "-DCATS_SANITIZE=ON"]
    build = ["cmake", "--build", str(ASAN_BUILD), "--target", "test_somegather", "-j4"]
    with open(ASAN_BUILD.parent / f".{ASAN_BUILD.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for cmd in (configure, build):
            res = subprocess.run(cmd, capture_output=True, text=True)
            assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    exe = ASAN_BUILD / "test_somegather"
    assert exe.is_file()
    return exe


@pytest.fixture(scope="module")
def asan_run(asan_program: Path, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("sg")
    env = dict(
        os.environ,
        ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:detect_stack_use_after_return=1",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
    )
    res = subprocess.run(
        [str(asan_program), str(GOLDEN), str(out), "20000", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-6000:]
    assert "ERROR: AddressSanitizer" not in text and "runtime error" not in text, text[-6000:]
    assert text.rstrip().endswith("OK"), text[-3000:]
    return out, text


def test_c_sanitizer_receive_and_fuzz(asan_run) -> None:
    """The C test program: golden frames accepted/rejected with exactly their reasons,
    20000 mutated frames never crash or touch memory outside the buffers (ASan/UBSan)."""
    _, text = asan_run
    assert "receive:" in text and "fuzz: 20000 mutations" in text
    # the C encoder reproduced every accepted golden frame at its link's MTU
    desc = json.loads((GOLDEN / "frames.json").read_text())
    ok = sum(f["expect"] == "ok" for f in desc["frames"])
    assert f", {ok} golden byte-identical" in text, text[-3000:]


def _cframes(path: Path):
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        e, s, mtu, i, count, n = struct.unpack_from("<BBHHHH", data, pos)
        pos += 10
        yield e, s, mtu, i, count, data[pos : pos + n]
        pos += n


def test_python_decodes_c_frames(asan_run, golden) -> None:
    """Every frame the C engine encoded (all nodes, all exchanges, 8 MTUs) decodes with
    protobuf, follows the Python plan, and is byte-identical to the Python encoding."""
    out, _ = asan_run
    desc, loaded, inp = golden
    nodes = [n.runtime() for n in loaded]
    for n in nodes:
        n.begin(inp)
    want: dict[tuple, bytes] = {}
    cannot, c_cannot = set(), set()
    for _e in range(nodes[0].cfg.exchanges):
        for n in nodes:
            for mtu in C_MTUS:
                try:
                    data = frames.encode_node(n, desc["inference_id"], mtu)
                except ValueError:
                    cannot.add((n.e, n.spec.node, mtu))
                    continue
                for i, d in enumerate(data):
                    want[(n.e, n.spec.node, mtu, i)] = d
        for n in nodes:
            n.compute()
    assert not cannot  # the v2 header leaves room for rows even at 26 bytes
    got = {}
    for e, s, mtu, i, count, data in _cframes(out / "cframes.bin"):
        if count == 0:
            c_cannot.add((e, s, mtu))
            continue
        msg = pb().ColumnFrame.FromString(data)
        assert (msg.exchange, msg.fragment) == (e, i)
        assert msg.inference_id == desc["inference_id"]
        assert len(data) <= mtu
        got[(e, s, mtu, i)] = data
    assert c_cannot == cannot
    assert set(got) == set(want)
    count_diff = [k for k in want if len(got[k]) != len(want[k])]
    assert not count_diff, f"C and Python plans differ at {count_diff[:5]}"
    value_diff = [k for k in want if got[k] != want[k]]
    assert not value_diff, f"C payload differs from qref at {value_diff[:5]}"


def test_c_and_python_verdicts_agree(asan_run, golden) -> None:
    """Every mutated frame of the C fuzz run gets the same verdict from
    cats.artefacts.frames.decode."""
    out, _ = asan_run
    desc, loaded, inp = golden
    nodes = _nodes_at(loaded, inp, 0)
    ctx = {}
    for e in range(nodes[0].cfg.exchanges):
        ctx[e] = RxContext.for_node(nodes[desc["receiver"]], desc["inference_id"])
        for n in nodes:
            n.compute()
    outcomes = ("ok", *frames.REASONS)
    data = (out / "fuzz.bin").read_bytes()
    pos, seen, differ = 0, 0, []
    counts = dict.fromkeys(outcomes, 0)
    while pos < len(data):
        e, r, src, mtu, n = struct.unpack_from("<BBBHH", data, pos)
        frame = data[pos + 7 : pos + 7 + n]
        pos += 7 + n
        seen += 1
        try:
            frames.decode(frame, src, dataclasses.replace(ctx[e], mtu=mtu))
            verdict = "ok"
        except FrameError as err:
            verdict = err.reason
        counts[verdict] += 1
        if verdict != outcomes[r]:
            differ.append((outcomes[r], verdict, frame.hex()))
    assert seen == 20000
    assert not differ, differ[:5]
    # every outcome the v2 checks can give was exercised
    assert all(counts[k] > 0 for k in outcomes if k not in ("partition", "column")), counts
    assert counts["partition"] == counts["column"] == 0


# ----------------------------------------------------------------------------------------------
# In-process swarm of C nodes over C-encoded frames (host library, tools/cats/firmware/cnode.py)
# ----------------------------------------------------------------------------------------------


class _CStats(ctypes.Structure):
    _fields_ = [(f.name, ctypes.c_uint32) for f in dataclasses.fields(frames.Stats)]


@pytest.fixture(scope="module")
def sg_lib():
    why = _core_ready()
    if why:
        pytest.skip(why)
    cnode = pytest.importorskip("cats.firmware.cnode")
    lib = cnode.lib()
    p, u8p, sz, st = (
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_uint8),
        ctypes.c_size_t,
        ctypes.POINTER(_CStats),
    )
    for name, res, args in (
        ("cats_sg_partition_tag", ctypes.c_uint32, [p]),
        ("cats_sg_frame_count", ctypes.c_int, [p, sz]),
        ("cats_sg_encode", ctypes.c_int, [p, ctypes.c_uint16, sz, u8p, sz, st]),
        ("cats_sg_receive", ctypes.c_int, [p, ctypes.c_uint16, sz, u8p, sz, st]),
        ("cats_sg_compute", ctypes.c_int, [p, st]),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return cnode, lib


def _c_frames(lib, node, mtu: int, st: _CStats) -> list[bytes]:
    count = lib.cats_sg_frame_count(node._n, mtu)
    assert count >= 0, count
    out = []
    for i in range(count):
        buf = (ctypes.c_uint8 * mtu)()
        n = lib.cats_sg_encode(node._n, i, mtu, buf, mtu, ctypes.byref(st))
        assert 0 < n <= mtu, n
        out.append(bytes(buf[:n]))
    return out


@pytest.mark.bitexact
@pytest.mark.parametrize(
    "case", [("golden", MTU_154, 0.3), ("golden", 32, 0.2), ("d3", MTU_BLE, 0.4)]
)
def test_swarm_over_frames_c(sg_lib, golden, tmp_path: Path, case) -> None:
    """C nodes exchange C-encoded frames through cats_sg_receive with seeded frame loss; the
    output equals qref.run_swarm with the same columns lost, bit for bit, and the frames are
    the ones cats.artefacts.frames encodes."""
    cnode, lib = sg_lib
    which, mtu, p = case
    if which == "golden":
        desc, loaded, inp = golden
        make = lambda: [n.runtime() for n in loaded]  # noqa: E731
        directory = GOLDEN / "export"
    else:
        make, inp, _ = _in_memory(3, tmp_path)
        directory = tmp_path
    cn = cnode.load_swarm(directory)
    tag = frames.partition_tag(cn[0].partition_hash)
    assert lib.cats_sg_partition_tag(cn[0]._n) == tag
    drop = _drop(int(p * 100) + mtu, p)
    stats = [_CStats() for _ in cn]
    py = [frames.Receiver(n, mtu) for n in make()]
    inference = 0x10042  # goes on the air as 0x0042
    for c in cn:
        c.begin(inference, inp)
    for r in py:
        r.begin(inference, inp)
    lost: dict[int, dict[int, set[int]]] = {}
    for e in range(cn[0].n_exchanges):
        sent = [_c_frames(lib, c, mtu, stats[s]) for s, c in enumerate(cn)]
        assert sent == [r.outgoing() for r in py]  # the same bytes as cats.artefacts.frames
        lost[e] = {d: set() for d in range(len(cn))}
        for s, data in enumerate(sent):
            for i, f in enumerate(data):
                cols = list(frames.decode(f, s, py[(s + 1) % len(py)].context()).column_ids)
                for d, c in enumerate(cn):
                    if d == s:
                        continue
                    if drop(e, s, i, d):
                        lost[e][d].update(cols)
                        continue
                    buf = (ctypes.c_uint8 * len(f)).from_buffer_copy(f)
                    rc = lib.cats_sg_receive(c._n, s, mtu, buf, len(f), ctypes.byref(stats[d]))
                    assert rc == 0
                    assert py[d].receive(f, s)
        for s, c in enumerate(cn):
            assert lib.cats_sg_compute(c._n, ctypes.byref(stats[s])) == 0
            py[s].compute()
    out = np.concatenate([c.output() for c in cn])
    n_lost = sum(len(v) for per in lost.values() for v in per.values())
    assert n_lost > 0
    want = qref.run_swarm([_LossyNode(n, {e: lost[e][d] for e in lost})
                           for d, n in enumerate(make())], inp)  # fmt: skip
    assert np.array_equal(out, want)
    for s in range(len(cn)):
        c_stats = {k: getattr(stats[s], k) for k, _ in _CStats._fields_}
        assert c_stats == py[s].stats.to_dict()
        assert c_stats["columns_lost"] == sum(len(lost[e][s]) for e in lost)
