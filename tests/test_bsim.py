"""The CATS firmware on BabbleSim: `cats sim --backend bsim` builds the node and gateway
samples for Zephyr's nrf52_bsim board and runs whole inferences over BabbleSim's 2.4 GHz phy
with the real radio stacks (the nRF 802.15.4 driver + 802.15.4 L2; Zephyr's BLE controller).
Needs a Zephyr tree (ZEPHYR_BASE, west.yml pins v4.3.0), west with Zephyr's Python
requirements on PATH, and BabbleSim (BSIM_OUT_PATH, BSIM_COMPONENTS_PATH); skipped without."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cats.sim import bsim

try:
    bsim.environment()
    MISSING = None
except bsim.BsimUnavailable as exc:
    MISSING = str(exc)

pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"BabbleSim swarm: {MISSING}")
NODES = 4


@pytest.fixture(scope="module")
def partition(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bsim") / "part"
    subprocess.run([sys.executable, "-m", "cats.cli", "export", "--preset", "verytiny",
                    "--nodes", str(NODES), "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return out


def _sim(partition: Path, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "cats.cli", "sim", str(partition), "--backend", "bsim",
         "--inferences", "1", "--json", *args],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("link", ["ieee802154", "ble2m"])
def test_bsim_swarm_is_bit_exact_without_loss(partition: Path, link: str) -> None:
    res = _sim(partition, "--link", link)
    assert res["ok"] and res["backend"] == "bsim" and res["nodes"] == NODES
    row = res["per_inference"][0]
    assert row["status"] == 0 and not row["degraded"] and row["missing_nodes"] == []
    assert row["columns_lost"] == 0 and row["bit_exact"], row
    # BabbleSim's clock: the radio stack is slower than the medium's back-to-back airtime, and
    # the medium's radio model (the MAC per frame: CSMA-CA, or the controller's advertising
    # events; the output turns) is within a few percent of it
    assert res["simulated_latency_s"] > res["medium"]["airtime_payload_only_s"]
    assert 0.9 < res["latency_ratio_vs_medium_radio"] < 1.1
    assert res["run"]["exit_codes"]["phy"] == 0


def test_rebooted_gateway_never_reuses_an_inference_id(partition: Path) -> None:
    """Inference ids are the nonces' counter: each run boots the gateway again on the same
    simulated flash (its settings, CONFIG_CATS_GATEWAY_ID_STORE), so the second run's ids lie
    above the first's instead of restarting at 1."""
    first, second = (_sim(partition, "--link", "ieee802154") for _ in range(2))
    a, b = (r["per_inference"][0] for r in (first, second))
    assert a["status"] == 0 and b["status"] == 0 and b["bit_exact"], (a, b)
    assert b["inference_id"] > a["inference_id"] >= 1
