"""The simulated swarm under attack (`cats sim --attack`): an unkeyed station in the medium
forges, replays, tampers with and impersonates the gateway; no receiver accepts any of it and
every output stays bit-exact with cats.qref. Also: a node with the wrong key is rejected by
reason and its result is degraded; MIC 4 works end to end; the key never shows in the
artefacts, the medium log, the process logs, the JSON or the pcap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cats.artefacts import export
from cats.model.partition import Partition
from cats.sim.attack import MODES
from cats.sim.run import simulate
from cats.sim.swarm import Swarm, build_executables
from cats.wire import auth

NODES = 4


@pytest.fixture(scope="module")
def part(tmp_path_factory) -> Path:
    build_executables()
    out = tmp_path_factory.mktemp("attack") / "d4"
    _, qm = export.untrained("test", 0)
    export.export_partition(qm, Partition.full(qm.cfg, NODES), out)
    return out


def _inputs(directory: Path, k: int) -> np.ndarray:
    cfg = export.load_node(directory / "node-0").spec.cfg
    rng = np.random.default_rng(7)
    return rng.integers(-100, 100, size=(k, cfg.tokens, cfg.patch), dtype=np.int8)


@pytest.mark.parametrize("mode", MODES)
def test_attack_is_rejected(part: Path, tmp_path: Path, mode: str) -> None:
    res = simulate(part, inputs=_inputs(part, 3), attack=mode, workdir=tmp_path / "w")
    a = res["attack"]
    assert a["attack_frames_sent"] > 0, a
    assert a["attack_frames_accepted"] == 0, (a, res["auth"]["per_station"])
    assert not a["outputs_changed"] and res["bit_exact"] and res["ok"]
    assert res["degraded"] == 0  # nothing honest was lost
    rejected = a["rejected"]
    assert rejected["mic"] > 0
    if mode == "replay":
        assert rejected["replay"] > 0  # verbatim copies are authentic but old
    # every rejection is the attacker's: the honest frames were all authenticated
    for st in res["auth"]["per_station"].values():
        assert st["authenticated"] == st["honest_delivered"]


def test_no_attack_measures_zero_and_mic4(part: Path, tmp_path: Path) -> None:
    res = simulate(part, inputs=_inputs(part, 2), mic=4, workdir=tmp_path / "w")
    assert res["ok"] and res["bit_exact"]
    assert res["auth"]["mic_bytes"] == 4
    assert res["auth"]["frames_accepted_beyond_honest"] == 0
    assert res["auth"]["rejected"] == {"mic": 0, "replay": 0, "sender": 0, "malformed": 0}


class _WrongKeySwarm(Swarm):
    """Node 1 provisioned with another key."""

    def __init__(self, *args, wrong_key: Path, **kw) -> None:
        super().__init__(*args, **kw)
        self.wrong_key = wrong_key

    def node_argv(self, d: int) -> list[str]:
        argv = super().node_argv(d)
        if d == 1:
            argv[argv.index("--key-file") + 1] = str(self.wrong_key)
        return argv


def test_wrong_key_is_rejected_and_degraded(part: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.key"
    auth.new_key_file(wrong)
    inp = _inputs(part, 1)[0]
    with _WrongKeySwarm(part, workdir=tmp_path / "w", wrong_key=wrong, deadline_ms=4000) as sw:
        with sw.client(timeout=60) as gw:
            res = gw.infer(inp, request_id=1, partition_hash=sw.partition_hash, deadline_ms=4000)
        log = (sw.workdir / "node-1.log").read_text()
    assert res.degraded and list(res.missing_nodes) == [1]
    # node 1 refused the gateway's InputFrames (MIC), so it never ran or sent anything; the
    # others authenticated each other and lost node 1's columns
    assert "InputFrame from station 4 rejected (authentication: -3)" in log
    counters = {int(n.node): n.counters for n in res.nodes}
    for d in (0, 2, 3):
        assert counters[d].frames_authenticated > 0 and counters[d].columns_lost > 0
        assert counters[d].rejected_mic == 0
    assert res.gateway_counters.frames_authenticated > 0


def test_key_never_leaves_the_key_file(part: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "swarm.key"
    key = auth.new_key_file(key_file)
    work, pcap, log = tmp_path / "w", tmp_path / "air.pcap", tmp_path / "medium.jsonl"
    res = simulate(
        part, inputs=_inputs(part, 1), key_file=key_file, workdir=work, pcap=pcap, log=log
    )
    assert res["ok"]
    blob = json.dumps(res).encode()
    files = [p for d in (work, part) for p in d.rglob("*") if p.is_file()] + [pcap, log]
    for needle in (key, key.hex().encode(), key.hex().upper().encode()):
        assert needle not in blob
        for f in files:
            assert needle not in f.read_bytes(), f
