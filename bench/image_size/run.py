"""Flash / RAM of the real Zephyr node images on nrf52840dk/nrf52840, per link and swarm size.

Builds node 0 of the untrained `verytiny` preset partitioned for D nodes with the node sample
(cats_zephyr_module/samples/node, -DCATS_LINK=<link>, warnings as errors), reads each
zephyr.elf with `cats.firmware.size` (pyelftools) and writes results.json: flash and RAM by section
and by CATS buffer, and the runtime's own share (code = flash - weights blob - manifest; RAM
without the arena), which `cats.analysis.resource` uses as the measured code size.

    python bench/image_size/run.py            # needs ZEPHYR_BASE (west.yml: v4.3.0) + west
    python bench/image_size/run.py --nodes 8 --link ble
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from cats.firmware import size  # noqa: E402

BOARD = "nrf52840dk/nrf52840"
RESULTS = Path(__file__).with_name("results.json")


def build(link: str, nodes: int, out: Path) -> Path:
    part = ROOT / "build" / "parts" / f"verytiny-d{nodes}"
    if not (part / "partition.json").is_file():
        subprocess.run([sys.executable, "-m", "cats.cli", "export", "--preset", "verytiny",
                        "--nodes", str(nodes), "--out", str(part)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    west = shutil.which("west") or sys.executable
    cmd = [west] if west != sys.executable else [west, "-m", "west"]
    cmd += ["build", "-b", BOARD, "-d", str(out), "-p", "auto",
            str(ROOT / "cats_zephyr_module" / "samples" / "node"), "--",
            f"-DCATS_PARTITION_DIR={part}", "-DCATS_NODE_ID=0", f"-DCATS_LINK={link}",
            "-DCONFIG_COMPILER_WARNINGS_AS_ERRORS=y"]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out / "zephyr" / "zephyr.elf"


def measure(elf: Path) -> dict:
    rep = size.size_report(elf, flash_limit=size.FLASH_LIMIT, ram_limit=size.RAM_LIMIT)
    roles = rep["cats_roles"]
    blob, manifest, arena = (roles.get(k, 0) for k in ("weights_blob", "manifest", "arena"))
    return {
        "flash_bytes": rep["flash_bytes"],
        "ram_bytes": rep["ram_bytes"],
        "totals": rep["totals"],
        "weights_blob": blob,
        "manifest": manifest,
        "arena": arena,
        "frame_buffers": roles.get("frame_buffer", 0),
        "code_bytes": rep["flash_bytes"] - blob - manifest,
        "runtime_ram_bytes": rep["ram_bytes"] - arena,
        "fits": rep["fits"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, action="append", help="D (default: 8 and 16)")
    ap.add_argument("--link", action="append", choices=("ieee802154", "ble"))
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "image_size")
    args = ap.parse_args()
    if not os.environ.get("ZEPHYR_BASE"):
        raise SystemExit("ZEPHYR_BASE is not set: this benchmark builds real Zephyr images")
    rows = []
    for link in args.link or ["ieee802154", "ble"]:
        for nodes in args.nodes or [8, 16]:
            elf = build(link, nodes, args.out / f"{link}-d{nodes}")
            rows.append({"board": BOARD, "link": link, "nodes": nodes, "node": 0,
                         **measure(elf)})  # fmt: skip
    head = f"{'link':<11}{'D':>3}{'flash':>9}{'RAM':>9}{'weights':>9}{'arena':>8}{'code':>9}"
    print(head)
    for r in rows:
        print(f"{r['link']:<11}{r['nodes']:>3}{r['flash_bytes']:>9,}{r['ram_bytes']:>9,}"
              f"{r['weights_blob']:>9,}{r['arena']:>8,}{r['code_bytes']:>9,}")  # fmt: skip
    zb = Path(os.environ["ZEPHYR_BASE"])
    version = (zb / "VERSION").read_text() if (zb / "VERSION").is_file() else ""
    RESULTS.write_text(json.dumps({"zephyr_version": " ".join(version.split()),
                                   "images": rows}, indent=1) + "\n")  # fmt: skip
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
