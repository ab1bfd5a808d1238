"""`cats size`: flash / RAM of node images by section and CATS buffer."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cats.firmware.size import FLASH_LIMIT, RAM_LIMIT, _bytes, format_report, size_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "size",
        help="flash/RAM of a node ELF per section, object file and CATS buffer, vs the limits",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("elf", type=Path, help="linked node image (ELF)")
    p.add_argument("--map", type=Path, help="GNU ld map file (default: <elf>.map if present)")
    p.add_argument(
        "--lib", type=Path, action="append", default=[], help="static library (no map: per object)"
    )
    p.add_argument("--flash-limit", type=_bytes, default=FLASH_LIMIT, help="default 1MiB")
    p.add_argument("--ram-limit", type=_bytes, default=RAM_LIMIT, help="default 256KiB")
    p.add_argument("--top", type=int, default=15, help="rows of the per-object table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    r = size_report(args.elf, args.map, args.lib, args.flash_limit, args.ram_limit)
    if not args.json:
        print(format_report(r, args.top))
    if not r["fits"]:
        # Over the limits: still print the report (the CLI would not, on an error), then fail.
        if args.json:
            print(json.dumps(r, indent=2, sort_keys=True, default=str))
        print(
            f"cats size: error: {args.elf} needs {r['flash_bytes']:,} B flash / "
            f"{r['ram_bytes']:,} B RAM, limits {args.flash_limit:,} / {args.ram_limit:,}",
            file=sys.stderr,
        )
        raise SystemExit(1)
    return r
