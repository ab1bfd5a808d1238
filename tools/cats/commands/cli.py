"""The `cats` command line. Each subcommand lives in its own module, which exposes
``register(subparsers)``; the handler it sets returns a JSON-serialisable dict that ``--json``
prints on stdout (human-readable output goes to stderr/stdout only without ``--json``)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from cats.base.threads import set_threads

# subcommand modules, each with register(subparsers)
COMMANDS = (
    "cats.commands.train",
    "cats.commands.prune",
    "cats.commands.export",
    "cats.commands.report",
    "cats.commands.evaluate",
    "cats.commands.demo",
    "cats.commands.size",
    "cats.commands.sim",
    "cats.commands.serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cats",
        description="CATS: one transformer run by a swarm of microcontrollers - train, prune, "
        "quantise, partition, export and size it.",
        epilog="Every subcommand takes --json for a machine-readable result on stdout.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    for p in sub.choices.values():
        p.add_argument("--json", action="store_true", help="print a machine-readable result")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_threads()
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        print(f"cats {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return 0
