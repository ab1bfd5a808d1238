"""West extension commands of the CATS tooling (registered by ``tools/west-commands.yml``).

    west cats-partition --preset verytiny --nodes 8      # per-node artefacts -> build/partition
    west cats-build                                      # Zephyr node images -> build/node-<i>
    west cats-build --m4                                 # bare-metal M4 images -> build/m4-node-<i>
    west cats-build --host                               # simulator stations -> <repo>/build/host
    west cats-size                                       # flash / RAM of every node image
    west cats-sim --inferences 4                         # the simulated swarm (= `cats sim`)

Every command takes ``--json`` (one JSON object on stdout, human output on stderr) and
``-d/--build-root`` (default ``build`` in the current directory, like ``west build``): the
partition is ``<build-root>/partition``, node ``i``'s Zephyr build ``<build-root>/node-<i>``
(flash it with ``west flash -d <build-root>/node-<i>``), its bare-metal Cortex-M4 build
``<build-root>/m4-node-<i>``. The host build of the simulator's stations is always
``<repo>/build/host``, where ``cats sim`` (``cats.sim.swarm``) and the tests look for it.

West imports this file by path (``west.commands.ext.*``), not as ``cats.commands.west``;
the ``cats`` package it uses is the one beside it (``tools/`` is put first on ``sys.path``), so
a workspace always runs its own checkout's tooling, whatever ``cats`` is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from west.commands import WestCommand

_TOOLS_DIR = Path(__file__).resolve().parents[2]
if __name__ != "cats.commands.west" and str(_TOOLS_DIR) not in sys.path[:1]:
    sys.path.insert(0, str(_TOOLS_DIR))

from cats.firmware import build  # noqa: E402 (after the sys.path line above)
from cats.firmware.build import (  # noqa: E402
    GATEWAY_SAMPLE,
    HOST_EXES,
    NANOPB_VERSION,
    SAMPLE,
    BuildError,
)
from cats.wire import auth  # noqa: E402

REPO = _TOOLS_DIR.parent
DEFAULT_BOARD = "nrf52840dk/nrf52840"
KIB = 1024
# Flash / RAM of the boards the node image targets (what the application may use).
BOARD_LIMITS: dict[str, tuple[int, int]] = {
    "nrf52840dk/nrf52840": (1024 * KIB, 256 * KIB),
    "nrf52840dongle/nrf52840": (1024 * KIB, 256 * KIB),
    "nrf52833dk/nrf52833": (512 * KIB, 128 * KIB),
    "nrf52dk/nrf52832": (512 * KIB, 64 * KIB),
    "nrf5340dk/nrf5340/cpuapp": (1024 * KIB, 512 * KIB),
}


# ------------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------------


_Fail = BuildError  # a user-facing error: message (+ hint); reported by _CatsCommand.do_run


def _check_cats_origin() -> str | None:
    """A warning when `cats` was imported from another checkout than this file's."""
    import cats

    origin = Path(cats.__file__).resolve().parent
    here = _TOOLS_DIR / "cats"
    if origin != here:
        return f"the cats package in use is {origin}, not this workspace's {here}"
    return None


def _partition_summary(part_dir: Path) -> dict[str, Any]:
    pj = part_dir / "partition.json"
    if not pj.is_file():
        raise _Fail(
            f"no partition at {part_dir} (partition.json missing)",
            hint="write one with `west cats-partition --preset verytiny --nodes 8` "
            "(or --checkpoint CK), or pass --partition DIR",
        )
    return json.loads(pj.read_text())


class _CatsCommand(WestCommand):
    """Common options (--json, -d/--build-root), output and error handling."""

    def _parser(self, parser_adder, help: str, description: str, epilog: str = ""):
        parser = parser_adder.add_parser(
            self.name,
            help=help,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument(
            "-d",
            "--build-root",
            type=Path,
            default=Path("build"),
            help="root of the build outputs (default: ./build)",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="print one JSON object on stdout (human output on stderr)",
        )
        return parser

    def do_run(self, args: argparse.Namespace, unknown: list[str]) -> None:
        self._json = bool(getattr(args, "json", False))
        warn = _check_cats_origin()
        if warn:
            self.wrn(warn)
        try:
            result = self.cats_run(args)
        except _Fail as exc:
            self._die(args, str(exc), exc.hint)
        code = 0 if result.get("ok", True) else 1
        if self._json:
            print(json.dumps(result, indent=2, sort_keys=True, default=str), flush=True)
        if code:
            sys.exit(code)

    def cats_run(self, args: argparse.Namespace) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def say(self, *msg: Any) -> None:
        """Human output: stdout, or stderr in --json mode."""
        print(*msg, file=sys.stderr if self._json else sys.stdout, flush=True)

    def _die(self, args: argparse.Namespace, message: str, hint: str | None = None):
        if getattr(args, "json", False):
            err = {"ok": False, "error": message}
            if hint:
                err["hint"] = hint
            print(json.dumps(err, indent=2), flush=True)
        self.die(message + (f"\n  {hint}" if hint else ""))

    # --- workspace look-ups ----------------------------------------------------------------------

    def _project(self, name: str):
        manifest = self.manifest if self.has_manifest else None
        if manifest is None:
            return None
        return next((p for p in manifest.projects if p.name == name), None)

    def nanopb_dir(self, explicit: Path | None) -> Path:
        """The nanopb C runtime for the host and M4 builds (Zephyr builds use Zephyr's nanopb
        module): --nanopb-dir, $CATS_NANOPB_DIR, scripts/fetch_nanopb.sh's copy, or the
        workspace's nanopb project (`west update nanopb`)."""
        tried = []
        for why, cand in (
            ("--nanopb-dir", explicit),
            ("CATS_NANOPB_DIR", os.environ.get("CATS_NANOPB_DIR")),
        ):
            if cand:
                if not (Path(cand) / "pb_decode.c").is_file():
                    raise _Fail(f"{why}={cand} has no pb_decode.c (nanopb C runtime)")
                return Path(cand).resolve()
        default = REPO / "build" / "third_party" / f"nanopb-{NANOPB_VERSION}"
        tried.append(str(default))
        if (default / "pb_decode.c").is_file():
            return default
        proj = self._project("nanopb")
        if proj is not None:
            tried.append(proj.abspath)
            if (Path(proj.abspath) / "pb_decode.c").is_file():
                return Path(proj.abspath)
        raise _Fail(
            f"nanopb C runtime not found (looked in {', '.join(tried)})",
            hint="run scripts/fetch_nanopb.sh (or `make setup`), or `west update nanopb`, "
            "or pass --nanopb-dir / set CATS_NANOPB_DIR",
        )


# ------------------------------------------------------------------------------------------------
# west cats-partition
# ------------------------------------------------------------------------------------------------


class CatsPartition(_CatsCommand):
    def __init__(self) -> None:
        super().__init__(
            "cats-partition",
            "partition a model into per-node artefacts (same as `cats export`)",
            "Partition a model for D nodes and write the per-node artefacts (`cats export`).",
        )

    def do_add_parser(self, parser_adder):
        p = self._parser(
            parser_adder,
            self.help,
            "Partition a trained checkpoint (its nodes and SomeGather pruning ratio p come from\n"
            "the checkpoint; --nodes re-partitions an unpruned one) or an untrained preset for\n"
            "--nodes D, and write <out>/partition.json + node-<d>/{manifest.pb,weights.bin}\n"
            "exactly as `cats export` does (byte-identical on rerun). node-<d> directories left\n"
            "from an earlier export with more nodes are removed.",
            epilog="examples:\n"
            "  west cats-partition --preset verytiny --nodes 8\n"
            "  west cats-partition --checkpoint runs/etth2/checkpoint.pt -o build/partition",
        )
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--checkpoint", type=Path, help="trained checkpoint from `cats train`")
        src.add_argument(
            "--preset", help="an untrained model of this preset (verytiny, demo, test)"
        )
        from cats.commands.export import add_untrained_args

        add_untrained_args(p)
        p.add_argument("--nodes", type=int, help="D (default: the checkpoint's partition)")
        p.add_argument(
            "-o", "--out", type=Path, help="output directory (default: <build-root>/partition)"
        )
        return p

    def cats_run(self, args: argparse.Namespace) -> dict[str, Any]:
        from cats.base.threads import set_threads
        from cats.commands import export

        set_threads()
        out = args.out or args.build_root / "partition"
        ns = argparse.Namespace(
            checkpoint=args.checkpoint,
            preset=args.preset,
            init_seed=args.init_seed,
            io=args.io,
            io_hidden=args.io_hidden,
            nodes=args.nodes,
            out=out,
            json=self._json,
        )
        try:
            summary = export.run(ns)
        except (ValueError, FileNotFoundError) as exc:
            raise _Fail(str(exc)) from None
        removed = []
        for node_dir in out.glob("node-*"):
            m = re.fullmatch(r"node-(\d+)", node_dir.name)
            files = {f.name for f in node_dir.iterdir()} if node_dir.is_dir() else set()
            if (
                m
                and int(m.group(1)) >= summary["nodes"]
                and files <= {"manifest.pb", "weights.bin"}
            ):
                shutil.rmtree(node_dir)
                removed.append(node_dir.name)
        if removed:
            self.say(f"removed stale {', '.join(sorted(removed))} of an earlier export")
        summary.update(ok=True, out=str(Path(out).resolve()), removed_stale=sorted(removed))
        return summary


# ------------------------------------------------------------------------------------------------
# west cats-build
# ------------------------------------------------------------------------------------------------


class CatsBuild(_CatsCommand):
    def __init__(self) -> None:
        super().__init__(
            "cats-build",
            "build the node images of a partition (Zephyr, bare-metal M4) or the host stations",
            "Build one image per node of a partition.",
        )

    def do_add_parser(self, parser_adder):
        p = self._parser(
            parser_adder,
            self.help,
            "Build one image per node of a partition (`west cats-partition`).\n\n"
            "Default: the Zephyr node sample (cats_zephyr_module/samples/node) for --board, one\n"
            "`west build` per node into <build-root>/node-<i> with -DCATS_PARTITION_DIR and\n"
            "-DCATS_NODE_ID=i (the sample links node i's weights.bin + manifest.pb into flash and\n"
            "sets CONFIG_CATS_NODE_ID). Needs Zephyr: the workspace's zephyr project (`west\n"
            "update`) or ZEPHYR_BASE, and a toolchain (Zephyr SDK). Flash node i with\n"
            "`west flash -d <build-root>/node-<i>`.\n\n"
            "--m4: the bare-metal Cortex-M4F node image (cats_zephyr_module/m4,\n"
            "arm-none-eabi-gcc, no Zephyr) per node into\n"
            "<build-root>/m4-node-<i>/cats_m4_node.elf.\n"
            "--host: the simulator's station executables (cats_node_sim, cats_gateway_sim) into\n"
            "<repo>/build/host, where `cats sim` / `west cats-sim` run them.",
            epilog="examples:\n"
            "  west cats-build                                   # nrf52840dk/nrf52840, all nodes\n"
            "  west cats-build -b nrf52840dk/nrf52840 --file-suffix ble -n 0 -n 3\n"
            "  west cats-build --m4 --host\n"
            "  west cats-build -- -DCONFIG_CATS_ARENA_SIZE=32768   # extra CMake arguments",
        )
        p.add_argument(
            "--partition", type=Path, help="export directory (default: <build-root>/partition)"
        )
        p.add_argument(
            "-b",
            "--board",
            default=DEFAULT_BOARD,
            help=f"Zephyr board target (default: {DEFAULT_BOARD})",
        )
        p.add_argument(
            "-n",
            "--node",
            type=int,
            action="append",
            help="build only this node (repeatable; default: every node)",
        )
        p.add_argument(
            "--zephyr",
            action="store_true",
            help="Zephyr node images (the default when neither --m4 nor --host)",
        )
        p.add_argument("--m4", action="store_true", help="bare-metal Cortex-M4 node images")
        p.add_argument("--host", action="store_true", help="host executables of the simulator")
        p.add_argument(
            "--link",
            choices=("ieee802154", "ble", "sim"),
            help="radio link of the images (-DCATS_LINK; default: ieee802154 on radio boards, "
            "sim on native_sim; cats_zephyr_module/cmake/cats_link.cmake)",
        )
        p.add_argument(
            "--gateway",
            action="store_true",
            help="also build the gateway image (samples/gateway) into <build-root>/gateway",
        )
        p.add_argument("--file-suffix", help="Zephyr FILE_SUFFIX (ble: the BLE link)")
        p.add_argument(
            "--key-file",
            type=Path,
            help="swarm key (32 hex digits or 16 raw bytes, chmod 600) provisioned into the "
            "Zephyr images as CONFIG_CATS_SWARM_KEY (it stays in the build directories' "
            "configuration, never in the partition artefacts)",
        )
        p.add_argument("--pristine", action="store_true", help="rebuild from scratch")
        p.add_argument(
            "--nanopb-dir",
            type=Path,
            help="nanopb C runtime for --m4/--host (default: build/third_party/"
            f"nanopb-{NANOPB_VERSION}, then the workspace's nanopb project)",
        )
        p.add_argument(
            "-j", "--jobs", type=int, default=os.cpu_count() or 2, help="parallel compile jobs"
        )
        p.add_argument(
            "cmake_args",
            nargs="*",
            metavar="-- CMAKE_ARGS",
            help="extra CMake arguments for the node builds (after --)",
        )
        return p

    # --- Zephyr --------------------------------------------------------------------------------

    def zephyr(self) -> tuple[str, Path]:
        """("west", tree) when the tree is the workspace's active zephyr project (whose
        extension commands give `west build`), ("cmake", tree) for another Zephyr tree; a
        _Fail that says what is missing and how to get it when there is none.

        The tree is ZEPHYR_BASE as west resolves it for extension commands: --zephyr-base,
        the environment's ZEPHYR_BASE, the zephyr.base setting, else the manifest's zephyr
        project (set even when that project is not cloned)."""
        proj = self._project("zephyr")
        active = proj is not None and self.manifest.is_active(proj)
        zb = os.environ.get("ZEPHYR_BASE")
        same = bool(zb and proj is not None and Path(zb).resolve() == Path(proj.abspath).resolve())
        if zb and build.is_zephyr(Path(zb)):
            if same and active and (Path(zb) / "scripts" / "west-commands.yml").is_file():
                return "west", Path(zb)
            return "cmake", Path(zb)
        raise build.zephyr_missing(zb if not same else None, proj, active)

    def build_zephyr_node(
        self, mode: str, zbase: Path, args, part: Path, node: int | None, bdir: Path
    ) -> dict[str, Any]:
        """One `west build` (or CMake) of the node sample for `node`, or of the gateway
        sample when `node` is None."""
        app = SAMPLE if node is not None else GATEWAY_SAMPLE
        what = f"node {node}" if node is not None else "the gateway"
        defs = _zephyr_defs(args, part, node)
        if mode == "west":
            build.west_build(
                args.board, app, bdir, defs, what, pristine=args.pristine, stream=not self._json
            )
        else:
            build.cmake_build(
                zbase,
                args.board,
                app,
                bdir,
                defs,
                what,
                pristine=args.pristine,
                jobs=args.jobs,
                stream=not self._json,
            )
        elf = build.zephyr_elf(bdir, what)
        if node is None:
            return {"build_dir": str(bdir), "elf": str(elf), "flash": f"west flash -d {bdir}"}
        return build.zephyr_node_row(elf, node, bdir)

    # --- the command ----------------------------------------------------------------------------

    def cats_run(self, args: argparse.Namespace) -> dict[str, Any]:
        root = args.build_root
        want_zephyr = args.zephyr or not (args.m4 or args.host)
        result: dict[str, Any] = {"ok": True, "build_root": str(root.resolve())}
        nodes: list[int] = []
        part = None
        if want_zephyr or args.m4:
            part, nodes = _select_nodes(args, result)
        zmode = zbase = None
        if want_zephyr:
            zmode, zbase = self.zephyr()  # before anything is built: fail fast
        if args.m4:
            build.check_m4_tools()
        nanopb = self.nanopb_dir(args.nanopb_dir) if (args.m4 or args.host) else None
        if args.host:
            result["host"] = self._build_host_stations(nanopb, args.jobs)
        if args.m4:
            result["m4"] = [self._build_m4(args, nanopb, part, i) for i in nodes]
        if want_zephyr:
            result["zephyr"] = self._build_zephyr(args, zmode, zbase, part, nodes)
        return result

    def _build_host_stations(self, nanopb: Path, jobs: int) -> dict[str, Any]:
        self.say(f"host: cats_zephyr_module/host -> {REPO / 'build' / 'host'}")
        host = build.build_host(nanopb, jobs)
        for name, path in host["executables"].items():
            self.say(f"  {name}: {path}")
        return host

    def _build_m4(self, args, nanopb: Path, part: Path, node: int) -> dict[str, Any]:
        bdir = (args.build_root / f"m4-node-{node}").resolve()
        self.say(f"m4: node {node} -> {bdir}")
        return build.build_m4_node(
            nanopb,
            part,
            node,
            bdir,
            cmake_args=list(args.cmake_args),
            jobs=args.jobs,
            pristine=args.pristine,
        )

    def _build_zephyr(
        self, args, zmode: str, zbase: Path, part: Path, nodes: list[int]
    ) -> dict[str, Any]:
        """The Zephyr images: one per node into <build-root>/node-<i>, and with --gateway the
        gateway's into <build-root>/gateway."""
        out: dict[str, Any] = {
            "board": args.board,
            "mode": zmode,
            "zephyr_base": str(zbase),
            "nodes": [],
        }
        for i in nodes:
            bdir = (args.build_root / f"node-{i}").resolve()
            self.say(f"zephyr: node {i} ({args.board}) -> {bdir}")
            row = self.build_zephyr_node(zmode, zbase, args, part, i, bdir)
            out["nodes"].append(row)
            self.say(f"  {row['elf']}  (flash: {row['flash']})")
        if args.gateway:
            bdir = (args.build_root / "gateway").resolve()
            self.say(f"zephyr: gateway ({args.board}) -> {bdir}")
            row = self.build_zephyr_node(zmode, zbase, args, part, None, bdir)
            out["gateway"] = row
            self.say(f"  {row['elf']}  (flash: {row['flash']})")
        return out


def _select_nodes(args, result: dict[str, Any]) -> tuple[Path, list[int]]:
    """The partition to build and the nodes of it (-n, else all); records the partition in
    `result`."""
    part = (args.partition or args.build_root / "partition").resolve()
    summary = _partition_summary(part)
    total = int(summary["nodes"])
    nodes = sorted(set(args.node)) if args.node else list(range(total))
    bad = [i for i in nodes if not 0 <= i < total]
    if bad:
        raise _Fail(f"node {bad[0]} is not in the partition (nodes 0..{total - 1})")
    result.update(partition_dir=str(part), partition_hash=summary["partition_hash"], nodes=total)
    return part, nodes


def _zephyr_defs(args, part: Path, node: int | None) -> list[str]:
    """The CMake definitions of a node (or, `node` None, the gateway) image."""
    defs = [f"-DCATS_PARTITION_DIR={part}"]
    if node is not None:
        defs.append(f"-DCATS_NODE_ID={node}")
    if args.link:
        defs.append(f"-DCATS_LINK={args.link}")
    if args.file_suffix:
        defs.append(f"-DFILE_SUFFIX={args.file_suffix}")
    if getattr(args, "key_file", None):  # the swarm key, as a Kconfig string
        defs.append(f'-DCONFIG_CATS_SWARM_KEY="{auth.load_key(args.key_file).hex()}"')
    return defs + list(args.cmake_args)


# ------------------------------------------------------------------------------------------------
# west cats-size
# ------------------------------------------------------------------------------------------------


def _find_images(args) -> list[tuple[Path, str]]:
    """(ELF, kind) of the images to size: the arguments (ELFs or build dirs), else every node
    build under the build root (Zephyr first, --m4 / --zephyr to choose)."""
    out: list[tuple[Path, str]] = []

    def kind_of(elf: Path) -> str:
        return "zephyr" if elf.name == "zephyr.elf" else "m4"

    for item in args.images:
        item = Path(item)
        if item.is_file():
            out.append((item, kind_of(item)))
            continue
        cands = [
            item / "zephyr" / "zephyr.elf",
            item / "cats_m4_node.elf",
            *sorted(item.glob("*/zephyr/zephyr.elf")),
        ]
        elf = next((c for c in cands if c.is_file()), None)
        if elf is None:
            raise _Fail(f"{item}: no ELF (zephyr/zephyr.elf or cats_m4_node.elf) there")
        out.append((elf, kind_of(elf)))
    if out:
        return out

    def node_index(p: Path) -> int:
        return int(p.name.rsplit("-", 1)[1])

    root = args.build_root
    zephyr = [d for d in root.glob("node-*") if re.fullmatch(r"node-\d+", d.name)]
    m4 = [d for d in root.glob("m4-node-*") if re.fullmatch(r"m4-node-\d+", d.name)]
    if args.m4 or (not args.zephyr and not zephyr):
        for d in sorted(m4, key=node_index):
            if (d / "cats_m4_node.elf").is_file():
                out.append((d / "cats_m4_node.elf", "m4"))
    else:
        for d in sorted(zephyr, key=node_index):
            elf = next(
                (
                    e
                    for e in (d / "zephyr" / "zephyr.elf", *d.glob("*/zephyr/zephyr.elf"))
                    if e.is_file()
                ),
                None,
            )
            if elf is not None:
                out.append((elf, "zephyr"))
    if not out:
        which = (
            "m4-node-<i>" if args.m4 else ("node-<i>" if args.zephyr else "node-<i> or m4-node-<i>")
        )
        raise _Fail(
            f"no node images in {root}/{which}",
            hint="build them with `west cats-build` (Zephyr) or `west cats-build --m4`, "
            "or pass ELF files / build directories",
        )
    return out


def _build_dir_of(elf: Path) -> Path:
    """The CMake build directory of an image (zephyr.elf sits in <build>/zephyr/)."""
    for d in (elf.parent, elf.parent.parent, elf.parent.parent.parent):
        if (d / "CMakeCache.txt").is_file():
            return d
    return elf.parent


class CatsSize(_CatsCommand):
    def __init__(self) -> None:
        super().__init__(
            "cats-size",
            "flash / RAM of every node image, by section and CATS buffer, vs the board's limits",
            "Size the node images (pyelftools on the ELF, `cats size`).",
        )

    def do_add_parser(self, parser_adder):
        p = self._parser(
            parser_adder,
            self.help,
            "Read every node image with pyelftools (cats.firmware.size): flash (text + rodata\n"
            "+ data) and RAM (data + bss) by section kind, the CATS symbols (weights blob,\n"
            "manifest, arena, frame buffers), against the board's limits. Exits 1, after the\n"
            "table, when a node does not fit.\n\n"
            "Images: the arguments (ELF files or build directories), else <build-root>/node-<i>\n"
            "(Zephyr) or, with --m4 or when there are none, <build-root>/m4-node-<i>.\n"
            "Limits: --flash-limit/--ram-limit, else --board, else the FLASH and RAM regions\n"
            "of the image's linker map (what the linker placed it in), else the nRF52840's\n"
            "1 MiB / 256 KiB. Boards: " + ", ".join(BOARD_LIMITS),
            epilog="examples:\n"
            "  west cats-size --m4\n"
            "  west cats-size build/node-3 --board nrf52833dk/nrf52833\n"
            "  west cats-size --m4 --ram-limit 64K --json",
        )
        p.add_argument("images", nargs="*", type=Path, help="ELF files or build directories")
        p.add_argument("--m4", action="store_true", help="the bare-metal M4 builds (m4-node-<i>)")
        p.add_argument("--zephyr", action="store_true", help="the Zephyr builds (node-<i>)")
        p.add_argument("--board", help="check against this board's flash / RAM")
        p.add_argument("--flash-limit", help="flash limit (bytes, or 512K, 1M)")
        p.add_argument("--ram-limit", help="RAM limit (bytes, or 64K)")
        p.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="also print each image's full `cats size` report",
        )
        return p

    def limits(self, args, elf: Path) -> tuple[int, int, str]:
        from cats.firmware import size

        flash = ram = None
        source = []
        if args.board:
            if args.board not in BOARD_LIMITS:
                raise _Fail(
                    f"unknown board {args.board}",
                    hint=f"known: {', '.join(BOARD_LIMITS)}; or give --flash-limit and --ram-limit",
                )
            flash, ram = BOARD_LIMITS[args.board]
            source.append(f"board {args.board}")
        else:
            map_path = next(
                (
                    m
                    for m in (elf.with_suffix(".map"), elf.with_name(elf.name + ".map"))
                    if m.is_file()
                ),
                None,
            )
            regions = size.map_memory_regions(map_path) if map_path else {}
            rflash = next((v for k, v in regions.items() if k.upper() in ("FLASH", "ROM")), None)
            rram = next((v for k, v in regions.items() if k.upper() in ("RAM", "SRAM")), None)
            if rflash and rram:
                flash, ram = rflash[1], rram[1]
                board = build.cmake_cache(_build_dir_of(elf)).get("BOARD")
                source.append(f"linker map {map_path.name}" + (f" ({board})" if board else ""))
            else:
                flash, ram = size.FLASH_LIMIT, size.RAM_LIMIT
                source.append("nRF52840 defaults")
        try:
            if args.flash_limit:
                flash = size._bytes(args.flash_limit)
                source.append("--flash-limit")
            if args.ram_limit:
                ram = size._bytes(args.ram_limit)
                source.append("--ram-limit")
        except argparse.ArgumentTypeError as exc:
            raise _Fail(str(exc)) from None
        return flash, ram, ", ".join(source)

    def cats_run(self, args: argparse.Namespace) -> dict[str, Any]:
        from cats.firmware import size

        rows = []
        for elf, kind in _find_images(args):
            flash_limit, ram_limit, source = self.limits(args, elf)
            rep = size.size_report(elf, flash_limit=flash_limit, ram_limit=ram_limit)
            bdir = _build_dir_of(elf)
            cache = build.cmake_cache(bdir)
            node = cache.get("CATS_NODE_ID")
            if node is None:
                m = re.search(r"node-(\d+)$", bdir.name)
                node = m.group(1) if m else None
            roles = rep["cats_roles"]
            over = []
            if rep["flash_bytes"] > flash_limit:
                over.append(f"flash {rep['flash_bytes'] - flash_limit:,} B over")
            if rep["ram_bytes"] > ram_limit:
                over.append(f"RAM {rep['ram_bytes'] - ram_limit:,} B over")
            rows.append(
                {
                    "node": int(node) if node is not None and str(node).isdigit() else None,
                    "kind": kind,
                    "image": str(elf),
                    "build_dir": str(bdir),
                    "partition_dir": cache.get("CATS_PARTITION_DIR"),
                    "limits_source": source,
                    "weights_blob": roles.get("weights_blob", 0),
                    "manifest": roles.get("manifest", 0),
                    "arena": roles.get("arena", 0),
                    "frame_buffers": roles.get("frame_buffer", 0),
                    "over": over,
                    **rep,
                }
            )
            if args.verbose:
                self.say(size.format_report(rep))
                self.say("")
        self.say(self.table(rows))
        fits = all(r["fits"] for r in rows)
        if not fits:
            bad = [r for r in rows if not r["fits"]]
            for r in bad:
                self.err(
                    f"node {r['node']} ({r['image']}) does not fit: {'; '.join(r['over'])} "
                    f"(flash {r['flash_bytes']:,} / {r['limits']['flash_bytes']:,}, "
                    f"RAM {r['ram_bytes']:,} / {r['limits']['ram_bytes']:,})"
                )
        return {
            "ok": fits,
            "fits": fits,
            "nodes": rows,
            "max_flash_bytes": max(r["flash_bytes"] for r in rows),
            "max_ram_bytes": max(r["ram_bytes"] for r in rows),
            "weights_blob_total": sum(r["weights_blob"] for r in rows),
        }

    @staticmethod
    def table(rows: list[dict[str, Any]]) -> str:
        head = (
            f"{'node':>4} {'kind':<6} {'text':>8} {'rodata':>9} {'data':>6} {'bss':>8} "
            f"{'flash':>9} {'flash%':>6} {'RAM':>8} {'RAM%':>6} {'weights':>8} "
            f"{'manifest':>8} {'arena':>7} {'frames':>7}  fits"
        )
        lines = [head, "-" * len(head)]
        for r in rows:
            t = r["totals"]
            node = "?" if r["node"] is None else str(r["node"])
            lines.append(
                f"{node:>4} {r['kind']:<6} {t['text']:>8,} {t['rodata']:>9,} {t['data']:>6,} "
                f"{t['bss']:>8,} {r['flash_bytes']:>9,} {100 * r['flash_used']:>5.1f}% "
                f"{r['ram_bytes']:>8,} {100 * r['ram_used']:>5.1f}% {r['weights_blob']:>8,} "
                f"{r['manifest']:>8,} {r['arena']:>7,} {r['frame_buffers']:>7,}  "
                + ("yes" if r["fits"] else "NO: " + "; ".join(r["over"]))
            )
        sources = sorted(
            {
                (r["limits"]["flash_bytes"], r["limits"]["ram_bytes"], r["limits_source"])
                for r in rows
            }
        )
        for fl, ra, src in sources:
            lines.append(f"limits: flash {fl:,} B, RAM {ra:,} B ({src})")
        lines.append(
            f"{len(rows)} images: largest flash {max(r['flash_bytes'] for r in rows):,} B, "
            f"largest RAM {max(r['ram_bytes'] for r in rows):,} B, weights in all "
            f"{sum(r['weights_blob'] for r in rows):,} B"
        )
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# west cats-sim
# ------------------------------------------------------------------------------------------------


class _IntoParser:
    """Stands in for argparse's subparsers so that cats.sim.run.register() adds its options to
    this command's parser: `west cats-sim` takes exactly what `cats sim` takes."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return self.parser


class CatsSim(_CatsCommand):
    def __init__(self) -> None:
        super().__init__(
            "cats-sim",
            "run the partition on the simulated swarm (same as `cats sim`)",
            "Run inferences of the partition on the simulated swarm.",
        )
        self._have_sim = True

    def do_add_parser(self, parser_adder):
        p = self._parser(
            parser_adder,
            self.help,
            "Run inferences of a partition on the simulated swarm (radio medium + one host C\n"
            "node process per node + the C gateway) and check every result bit for bit against\n"
            "the integer reference, exactly as `cats sim` does (same options). The partition\n"
            "defaults to <build-root>/partition; the stations are built into <repo>/build/host\n"
            "first if missing (`west cats-build --host`). Exits 1 when an inference failed or a\n"
            "result is not bit-exact.",
            epilog="examples:\n"
            "  west cats-sim --inferences 4\n"
            "  west cats-sim --link ble2m --loss iid:0.1 --pcap air.pcap --json",
        )
        try:
            from cats.commands import sim as sim_cli
        except ImportError:  # the simulator is not in this checkout
            self._have_sim = False
            p.add_argument("partition_dir", nargs="?", type=Path)
            return p
        sim_cli.register(_IntoParser(p))
        for action in p._actions:  # the partition becomes optional (default under build root)
            if action.dest == "partition_dir":
                action.nargs, action.default, action.required = "?", None, False
                action.help = "export directory (default: <build-root>/partition)"
        p.add_argument(
            "--nanopb-dir", type=Path, help="nanopb C runtime, if the host stations must be built"
        )
        return p

    def cats_run(self, args: argparse.Namespace) -> dict[str, Any]:
        if not self._have_sim:
            raise _Fail("the simulated swarm (cats.sim, `cats sim`) is not in this checkout")
        from cats.base.threads import set_threads
        from cats.commands import sim as sim_cli
        from cats.firmware import cnode

        set_threads()
        args.partition_dir = (args.partition_dir or args.build_root / "partition").resolve()
        _partition_summary(args.partition_dir)
        host_dir = Path(cnode.BUILD_DIR)
        if not all((host_dir / exe).is_file() for exe in HOST_EXES):
            self.say(f"building the simulator's stations into {host_dir}")
            build.build_host(self.nanopb_dir(args.nanopb_dir), os.cpu_count() or 2)
        try:
            res = sim_cli.run(args)
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            raise _Fail(f"cats sim: {exc}") from None
        res = dict(res)
        res["ok"] = bool(res.get("ok")) and bool(res.get("bit_exact", True))
        return res
