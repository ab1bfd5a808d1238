"""`cats size` on the real Cortex-M4 node images (node 0 of the verytiny preset at D = 8, 16)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from _m4 import ROOT, build

from cats.cli import main
from cats.firmware import size


@pytest.fixture(scope="module", params=[8, 16])
def node(request):
    d = request.param
    b = build(d)
    return {"nodes": d, "elf": b / "cats_m4_node.elf", "part": ROOT / f"build/parts/verytiny-d{d}"}


def test_totals_are_the_elf_sections(node) -> None:
    r = size.size_report(node["elf"])
    t = r["totals"]
    assert r["flash_bytes"] == t["text"] + t["rodata"] + t["data"]
    assert r["ram_bytes"] == t["data"] + t["bss"]
    names = {s["name"]: s for s in r["sections"]}
    assert names[".text"]["kind"] == "text" and names[".bss"]["kind"] == "bss"
    assert names[".stack"]["kind"] == "bss"  # the linker script's stack is RAM
    assert not any(n.startswith(".debug") or n == ".comment" for n in names)
    assert r["fits"] and r["ok"]
    assert r["limits"] == {"flash_bytes": 1024 * 1024, "ram_bytes": 256 * 1024}


def test_cats_buffers_found(node) -> None:
    r = size.size_report(node["elf"])
    sym = {s["name"]: s for s in r["cats_symbols"]}
    blob = (node["part"] / "node-0" / "weights.bin").stat().st_size
    manifest = (node["part"] / "node-0" / "manifest.pb").stat().st_size
    assert sym["cats_partition_blob"]["size"] == blob
    assert sym["cats_partition_blob"]["role"] == "weights_blob"
    assert sym["cats_partition_blob"]["region"] == "flash"
    assert sym["cats_partition_manifest"]["size"] == manifest
    assert sym["cats_partition_manifest"]["role"] == "manifest"
    assert sym["cats_arena"]["role"] == "arena" and sym["cats_arena"]["region"] == "ram"
    cache = (node["elf"].parent / "CMakeCache.txt").read_text()
    arena = int(re.search(r"^CATS_ARENA_SIZE:STRING=(\d+)$", cache, re.MULTILINE).group(1))
    assert sym["cats_arena"]["size"] == arena  # the build's CATS_ARENA_SIZE
    assert r["cats_roles"]["frame_buffer"] > 0
    assert r["cats_roles"]["weights_blob"] == blob


def test_objects_from_the_map_add_up(node) -> None:
    """Every allocated byte is charged to an object (or linker fill / the stack) exactly once."""
    r = size.size_report(node["elf"])
    assert r["objects_source"].startswith("map:")
    objs = {o["object"]: o for o in r["objects"]}
    for kind in size.KINDS:
        assert sum(o[kind] for o in r["objects"]) == r["totals"][kind], kind
    core = [n for n in objs if n.startswith("libcats_core_m4.a(")]
    for unit in ("kernels", "node", "manifest", "somegather", "sha256", "pb_decode"):
        assert any(f"({unit}.c.obj)" in n for n in core), unit
    assert objs["partition_data.S.obj"]["rodata"] >= r["cats_roles"]["weights_blob"]
    assert objs["(stack)"]["bss"] == 8192


def test_archive_fallback_without_map(node, tmp_path) -> None:
    elf = tmp_path / "node.elf"
    shutil.copy(node["elf"], elf)  # no .map beside it
    lib = node["elf"].parent / "libcats_core_m4.a"
    r = size.size_report(elf, libs=[lib])
    assert r["objects_source"].startswith("archives")
    names = {o["object"] for o in r["objects"]}
    assert "libcats_core_m4.a(kernels.c.obj)" in names
    assert size.size_report(elf)["objects"] == []


def test_cli_json_and_limits(node, capsys) -> None:
    assert main(["size", "--json", str(node["elf"])]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] and out["flash_bytes"] > 0
    # Over a limit: the report is still printed, and the command fails.
    with pytest.raises(SystemExit) as exc:
        main(["size", "--json", "--ram-limit", "16KiB", str(node["elf"])])
    assert exc.value.code == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["fits"] is False
    assert "limits" in captured.err
    with pytest.raises(SystemExit):
        main(["size", "--flash-limit", "64K", str(node["elf"])])
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_byte_sizes_parse() -> None:
    assert size._bytes("256K") == size._bytes("256KiB") == 262144
    assert size._bytes("1M") == size._bytes("1MiB") == 1 << 20
    assert size._bytes("1000") == 1000


def test_missing_elf_is_an_error(tmp_path, capsys) -> None:
    assert main(["size", str(tmp_path / "nope.elf")]) == 2
