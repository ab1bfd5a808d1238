"""Honest timing: the links' MAC model (hand-computed frames and turns), the whole-node compute
model, the M4 instruction profiler, and byte-identical loss-free seeded swarm runs."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from cats.artefacts import export
from cats.model.partition import Partition
from cats.sim import latency, m4profile
from cats.wire import phy as phys

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------------
# MAC model: one frame and one turn, by hand
# ----------------------------------------------------------------------------------------------


def test_802154_constants_from_the_standard() -> None:
    # 16 us symbols: aTurnaroundTime 12, CCA 8, aUnitBackoffPeriod 20, macLIFSPeriod 40
    assert phys.csma_backoff_mean_us() == 3.5 * 320.0  # mean of uniform{0..7} units
    mac = phys.IEEE802154.mac
    # the switch to TX as the nRF driver takes it on nrf52_bsim (the standard's bound: 192 us)
    assert dict(mac.parts) == {"backoff_mean": 1120.0, "cca": 128.0, "turnaround": 83.0}
    assert mac.per_frame_us == 1331.0 and mac.repeat_us == 0.0
    std = dict(phys.MAC_802154_STANDARD.parts)
    assert std["lifs"] == 640.0 and std["turnaround"] == 192.0


def test_802154_one_frame_and_one_turn() -> None:
    p = phys.IEEE802154
    # 116-byte radio frame: (SHR+PHR 6 + MHR 9 + 116 + FCS 2) x 32 us = 4256 us
    assert p.airtime_us(116) == 133 * 32 == 4256.0
    assert p.mac_us(116) == 4256.0 + 1120.0 + 128.0 + 83.0 == 5587.0
    # node 0 sends two full frames, node 1 one of 50 bytes: one after the other
    assert p.schedule_us({0: [116, 116], 1: [50]}) == 2 * 5587.0 + (67 * 32 + 1331.0)
    assert p.floor_us(100) == 100 * 32.0  # 250 kbit/s


def test_ble_one_frame_and_one_turn() -> None:
    p = phys.BLE2M
    # AUX_ADV_IND (241 + 25) x 4 us, 3 ADV_EXT_IND 17 B x 8 us, T_MAFS 300
    one = (241 + 25) * 4 + 3 * 136 + 300
    assert p.airtime_us(241) == one
    # Zephyr's controller on nrf52_bsim: 2258 us between events, primaries 48 us apart, the
    # AUX_ADV_IND 446 us past T_MAFS
    assert dict(p.mac.parts) == {"frame_gap": 2258.0, "primary_gaps": 96.0, "aux_offset": 446.0}
    # 241 bytes + the AD header 4 > 191: an AUX_CHAIN_IND T_MAFS later (AuxPtr 3 + its 15
    # bytes of framing at 2 Mbit/s); 187 bytes still fit one PDU
    chain = 300.0 + 18 * 4.0
    assert p.mac_us(241) == one + 2800.0 + chain
    assert p.mac_us(187) == (187 + 25) * 4 + 708 + 2800.0
    assert p.mac_us(188) == (188 + 25) * 4 + 708 + 2800.0 + chain
    # one advertising event per frame (CONFIG_CATS_BLE_ADV_EVENTS 1): no repeats
    assert p.mac.repeat_us == 0.0
    assert p.schedule_us({3: [241, 241, 241]}) == 3 * (one + 2800.0 + chain)
    assert phys.BLE2M_AUX.mac_us(241) == (241 + 25) * 4 + 300.0  # chained: T_MAFS each
    assert p.floor_us(100) == 400.0  # 2 Mbit/s


def test_ble_frame_time_matches_the_bsim_dump() -> None:
    # event start to the next event's start in the 2G4 phy's dump of the D = 4 swarm
    # (bench/swarm/README.md "BLE timing"): AD 86 bytes, one PDU: 1678 + 2258 us; AD 215
    # bytes, AUX_ADV_IND 191 + AUX_CHAIN_IND 24: 2556 + 2258 us
    assert phys.BLE2M.mac_us(86 - 4) == pytest.approx(1678 + 2258, rel=0.005)
    assert phys.BLE2M.mac_us(215 - 4) == pytest.approx(2556 + 2258, rel=0.005)


def test_output_turns() -> None:
    p = phys.get("ieee802154", "direct")
    f = p.mac_us(40)
    # node d sends 2 d x 6 ms after the last exchange, or once the channel is free
    assert p.output_turns_us([(0, 40), (1, 40), (2, 40)]) == 24000.0 + f
    assert p.output_turns_us([(2, 40)]) == 24000.0 + f
    slow = dataclasses.replace(p, turn_frame_us=1.0)  # turns shorter than a frame: back to back
    assert slow.output_turns_us([(1, 40), (0, 40)]) == 2 * f
    assert p.output_turns_us([]) == 0.0


def test_turn_frame_follows_the_firmware() -> None:
    kconfig = (REPO / "cats_zephyr_module" / "Kconfig").read_text()
    block = kconfig[kconfig.index("config CATS_TURN_FRAME_US") :].split("help")[0]
    assert f"default {phys.BLE2M.turn_frame_us:.0f} if CATS_LINK_BLE" in block
    assert f"default {phys.IEEE802154.turn_frame_us:.0f}\n" in block
    assert phys.BLE2M_AUX.turn_frame_us == phys.BLE2M.turn_frame_us


def _kconfig_default(symbol: str) -> str:
    """The (unconditional) default of a symbol in cats_zephyr_module/Kconfig."""
    lines = (REPO / "cats_zephyr_module" / "Kconfig").read_text().splitlines()
    i = lines.index(f"config {symbol}")
    for line in lines[i + 1 :]:
        if line.startswith(("config ", "choice", "endchoice", "if ", "endif")):
            break
        if line.strip().startswith("default "):
            return line.strip().split()[1]
    raise AssertionError(f"{symbol}: no default in the Kconfig")


def test_ble_adv_events_follow_the_firmware() -> None:
    # one source of truth: the model's events per frame are the Kconfig default
    events = int(_kconfig_default("CATS_BLE_ADV_EVENTS"))
    assert events == phys.BLE_ADV_EVENTS
    assert phys.MAC_BLE_FIRMWARE.repeat_us == (events - 1) * 25000.0


def test_802154_channel_access_choice() -> None:
    # the firmware's choice (Kconfig CATS_802154_CHANNEL_ACCESS, csma by default) and the model's
    kconfig = (REPO / "cats_zephyr_module" / "Kconfig").read_text()
    choice = kconfig[kconfig.index("choice CATS_802154_CHANNEL_ACCESS") :]
    choice = choice[: choice.index("endchoice")]
    assert "default CATS_802154_ACCESS_CSMA" in choice
    assert "config CATS_802154_ACCESS_DIRECT" in choice
    conf = (REPO / "cats_zephyr_module" / "conf" / "link_ieee802154_direct.conf").read_text()
    assert "CONFIG_NET_L2_IEEE802154_RADIO_ALOHA=y" in conf
    assert "CONFIG_CATS_802154_ACCESS_DIRECT=y" in conf
    assert phys.get("ieee802154") is phys.IEEE802154
    assert phys.get("ieee802154", "csma").mac is phys.MAC_802154_NRF
    direct = phys.get("ieee802154", "direct")
    assert direct.mac is phys.MAC_802154_DIRECT and direct.mac.per_frame_us == 62.0
    assert direct.mac_us(116) == 4256.0 + 62.0
    with pytest.raises(ValueError):
        phys.get("ble2m", "direct")


def test_mac_none_is_the_payload_only_figure() -> None:
    p = dataclasses.replace(phys.IEEE802154, mac=phys.MAC_NONE)
    assert p.schedule_us({0: [116, 40], 2: [7]}) == sum(p.airtime_us(n) for n in (116, 40, 7))


# ----------------------------------------------------------------------------------------------
# Whole-node compute model and the profiler
# ----------------------------------------------------------------------------------------------


def test_cycle_estimate_of_instructions() -> None:
    assert m4profile.cycles_of("adds", "r3, #1") == 1
    assert m4profile.cycles_of("smlad", "r0, r1, r2, r3") == 1
    assert m4profile.cycles_of("ldr.w", "r3, [r8, ip, lsl #2]") == 2
    assert m4profile.cycles_of("push", "{r4, r5, r6, lr}") == 5
    assert m4profile.cycles_of("pop", "{r4, pc}") == 5
    assert m4profile.cycles_of("bne", "#0x38ee") == 2
    assert m4profile.cycles_of("sdiv", "r0, r1, r2") == 7


def test_function_groups() -> None:
    assert m4profile.group_of("mm_tiles") == "matmul"
    assert m4profile.group_of("linear.isra.0") == "matmul"
    assert m4profile.group_of("cats_layer_norm_s8") == "layernorm"
    assert m4profile.group_of("pb_decode_varint32") == "framing"
    assert m4profile.group_of("find_slot") == "slot lookup"
    assert m4profile.group_of("memset") == "other"


def test_m4_input_matches_node_main() -> None:
    x = m4profile.m4_input(512)
    assert x[0] == -63 and x[1] == -45
    assert x[2] == -26  # (74 - 127) / 2 = -26.5: C division truncates toward zero
    assert x.dtype.name == "int8"


def test_whole_node_compute_exceeds_the_matmuls(tmp_path: Path) -> None:
    _, qm = export.untrained("verytiny", 0)
    export.export_partition(qm, Partition.full(qm.cfg, 8), tmp_path / "d8")
    specs = [n.spec for n in export.load_partition(tmp_path / "d8")]
    whole = latency.WholeNode.load()
    assert whole.cycles_per_matmul_insn > 1.0 and whole.cycles_per_frame > 0
    c = latency.compute(specs)
    assert c["compute_s"] > c["compute_s_matmul_only"] > 0
    # the frames are planned as the C engine plans them: every node sends in every exchange
    sent = latency.frames_per_exchange(specs, phys.IEEE802154.column_mtu)
    assert len(sent) == len(specs[0].exchanges) and all(min(row) > 0 for row in sent)
    assert all(
        b >= a for a, b in zip(c["compute_s_per_node"], c["cpu_busy_s_per_node"], strict=True)
    )
    none = latency.compute(specs, whole=latency.WholeNode(1.0, 0.0, 0.0, 0.0, "none"))
    assert none["compute_s"] == pytest.approx(c["compute_s_matmul_only"])


def test_profile_file_is_a_loss_free_bit_exact_swarm_run() -> None:
    data = json.loads(latency.NODE_PROFILE.read_text())
    assert data["bit_exact_with_qref"] and data["frames_received"] > 0
    assert sum(g["instructions"] for g in data["groups"]) == data["instructions"]
    # the exec-log count agrees with the image's own timer count (the timer also counts
    # cats_sg_plan in cats_runner_init, before the inference: within a few percent)
    assert data["instructions"] == pytest.approx(data["instructions_timer"], rel=0.03)


@pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="needs qemu-system-arm and arm-none-eabi-gcc",
)
def test_profile_of_the_loopback_image_counts_every_instruction() -> None:
    from _m4 import build

    elf = build(8) / "cats_m4_node_qemu.elf"
    res = m4profile.profile(elf)
    assert res["instructions"] == pytest.approx(res["instructions_timer"], rel=0.03)
    groups = {g["group"]: g for g in res["groups"]}
    assert groups["matmul"]["instructions"] > 1_000_000
    # the direct column -> slot table: no search left worth counting
    assert groups.get("slot lookup", {"instructions": 0})["instructions"] < 100_000
    assert res["output"] and len(res["output"]) > 0


# ----------------------------------------------------------------------------------------------
# Determinism: the same seeded loss-free run twice sends the same bytes
# ----------------------------------------------------------------------------------------------


def test_loss_free_seeded_runs_are_byte_identical(tmp_path: Path) -> None:
    from cats.sim.run import simulate
    from cats.sim.swarm import build_executables

    build_executables()
    _, qm = export.untrained("verytiny", 0)
    part = tmp_path / "verytiny-d4"
    export.export_partition(qm, Partition.full(qm.cfg, 4), part)
    runs = []
    for k in range(2):
        res = simulate(part, inferences=1, seed=7, workdir=tmp_path / f"run{k}")
        assert res["bit_exact"]
        r = res["per_inference"][0]
        runs.append(
            (
                r["air_bytes"],
                r["air_bytes_input"],
                r["air_bytes_exchanges"],
                r["air_bytes_output"],
                r["frames_sent"],
                r["airtime_s"],
                r["airtime_payload_only_s"],
                r["gateway"]["air_bytes"],
            )
        )
        assert res["airtime_floor_ratio"] == pytest.approx(r["airtime_s"] / r["airtime_floor_s"])
        assert r["airtime_s"] > r["airtime_payload_only_s"] > r["airtime_floor_s"]
    assert runs[0] == runs[1]
