"""`cats size`: flash and RAM of a node image (ELF), per section kind, per object file, and the
CATS buffers (weight blob, manifest, arena, frame buffers), checked against the node's limits.

Section kinds come from the ELF section headers (pyelftools): allocated + executable = text,
allocated read-only data = rodata, allocated writable PROGBITS = data (stored in flash, copied
to RAM), allocated NOBITS = bss (RAM only; the linker script's stack section counts here).
flash = text + rodata + data, RAM = data + bss.

Per object file the numbers come from the GNU ld map file (``-Wl,-Map=<elf>.map``, looked up
beside the ELF unless ``--map`` names one): every input section that landed in an allocated
output section is charged to its object (``libcats_core.a(kernels.c.obj)``), linker padding to
``*fill*``. Without a map, ``--lib`` archives give the per-object section sizes before linking
(before --gc-sections, so an upper bound).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KIB = 1024
FLASH_LIMIT = 1024 * KIB  # nRF52840
RAM_LIMIT = 256 * KIB

KINDS = ("text", "rodata", "data", "bss")

# Roles of the CATS symbols the report singles out: (role, regex over the symbol name, where
# the symbol must live). nanopb's message descriptors (*_field_info, *_msg) are never a role.
CATS_ROLES: tuple[tuple[str, str, str], ...] = (
    ("weights_blob", r"(^|_)(partition_)?blob$|weights", "flash"),
    ("manifest", r"manifest$", "flash"),
    ("arena", r"arena", "ram"),
    # frame buffers: the link's queues and the runner's frame + early-frame stash
    ("frame_buffer", r"frame|runner|_tx_buf|_rx_buf|_rx_q$|msgq", "ram"),
)
_NANOPB_DESCRIPTOR = re.compile(r"_(field_info|msg|fields)$")


@dataclass(frozen=True)
class Section:
    name: str
    kind: str  # text / rodata / data / bss
    addr: int
    size: int


def _kind(sh_type: str, flags: int) -> str | None:
    from elftools.elf.constants import SH_FLAGS

    if not flags & SH_FLAGS.SHF_ALLOC:
        return None
    if sh_type == "SHT_NOBITS":
        return "bss"
    if flags & SH_FLAGS.SHF_EXECINSTR:
        return "text"
    if flags & SH_FLAGS.SHF_WRITE:
        return "data"
    return "rodata"


def elf_sections(elf_path: Path) -> list[Section]:
    from elftools.elf.elffile import ELFFile

    out = []
    with open(elf_path, "rb") as f:
        elf = ELFFile(f)
        for s in elf.iter_sections():
            kind = _kind(s["sh_type"], s["sh_flags"])
            if kind is not None and s["sh_size"] > 0:
                out.append(Section(s.name, kind, s["sh_addr"], s["sh_size"]))
    return out


def elf_symbols(elf_path: Path) -> list[dict[str, Any]]:
    """Sized data/function symbols with the section they live in."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    out = []
    with open(elf_path, "rb") as f:
        elf = ELFFile(f)
        names = {i: s.name for i, s in enumerate(elf.iter_sections())}
        for sec in elf.iter_sections():
            if not isinstance(sec, SymbolTableSection):
                continue
            for sym in sec.iter_symbols():
                typ = sym["st_info"]["type"]
                shndx = sym["st_shndx"]
                if typ not in ("STT_OBJECT", "STT_FUNC") or not isinstance(shndx, int):
                    continue
                if sym["st_size"] == 0:
                    continue
                out.append(
                    {
                        "name": sym.name,
                        "type": "object" if typ == "STT_OBJECT" else "func",
                        "addr": sym["st_value"],
                        "size": sym["st_size"],
                        "section": names.get(shndx, "?"),
                        "bind": sym["st_info"]["bind"][4:].lower(),
                    }
                )
    return out


# ------------------------------------------------------------------------------------------------
# Per object file: GNU ld map, or the archive members' own section sizes
# ------------------------------------------------------------------------------------------------

_MAP_ONE_LINE = re.compile(r"^ (\.\S+|COMMON)\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)\s+(\S.*)$")
_MAP_NAME_ONLY = re.compile(r"^ (\.\S+|COMMON)\s*$")
_MAP_CONT = re.compile(r"^\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)\s+(\S.*)$")
_MAP_FILL = re.compile(r"^ \*fill\*\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)")


def _object_name(path: str) -> str:
    """'/x/build/libcats_core.a(kernels.c.obj)' -> 'libcats_core.a(kernels.c.obj)'."""
    path = path.strip()
    m = re.match(r"^(.*?)([^/\\]+\.a)\((.+)\)$", path)
    if m:
        return f"{m.group(2)}({m.group(3)})"
    return Path(path).name


_MAP_OUTPUT = re.compile(r"^(\.\S+|/DISCARD/)")


def map_objects(map_path: Path, sections: list[Section]) -> dict[str, dict[str, int]]:
    """Bytes per object file and section kind, from a GNU ld map file.

    Input sections are charged to their object under the output section they were placed in
    (the map's column-0 lines); only allocated output sections of the ELF count, so debug
    info, .comment and discarded sections do not. Linker padding is ``*fill*`` (``(stack)``
    inside the linker script's stack section)."""
    kind_of = {s.name: s.kind for s in sections}
    per: dict[str, dict[str, int]] = {}
    current: str | None = None

    def charge(obj: str, size: int) -> None:
        kind = kind_of.get(current or "")
        if size == 0 or kind is None:
            return
        if obj == "*fill*" and current == ".stack":
            obj = "(stack)"
        d = per.setdefault(obj, dict.fromkeys(KINDS, 0))
        d[kind] += size

    lines = map_path.read_text(errors="replace").splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.startswith("Linker script and memory"))
    except StopIteration as exc:
        raise ValueError(f"{map_path} is not a GNU ld map file") from exc
    pending = False
    for ln in lines[start + 1 :]:
        m = _MAP_OUTPUT.match(ln)
        if m:
            current, pending = m.group(1), False
            continue
        if pending:
            pending = False
            m = _MAP_CONT.match(ln)
            if m:
                charge(_object_name(m.group(3)), int(m.group(2), 16))
                continue
        m = _MAP_ONE_LINE.match(ln)
        if m:
            charge(_object_name(m.group(4)), int(m.group(3), 16))
            continue
        if _MAP_NAME_ONLY.match(ln):
            pending = True
            continue
        m = _MAP_FILL.match(ln)
        if m:
            charge("*fill*", int(m.group(2), 16))
    return per


_MAP_REGION = re.compile(r"^(\S+)\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)(?:\s+(\S+))?\s*$")


def map_memory_regions(map_path: Path) -> dict[str, tuple[int, int]]:
    """name -> (origin, length) of the MEMORY regions in a GNU ld map's "Memory Configuration"
    (the limits the linker placed the image in: FLASH / RAM for the M4 and Zephyr images);
    ``*default*`` is left out."""
    out: dict[str, tuple[int, int]] = {}
    in_table = False
    for ln in Path(map_path).read_text(errors="replace").splitlines():
        if ln.startswith("Memory Configuration"):
            in_table = True
            continue
        if not in_table:
            continue
        if ln.startswith("Linker script and memory"):
            break
        m = _MAP_REGION.match(ln)
        if m and m.group(1) not in ("Name", "*default*"):
            out[m.group(1)] = (int(m.group(2), 16), int(m.group(3), 16))
    return out


def _archive_members(lib: Path) -> Iterable[tuple[str, bytes]]:
    """Members of a System V / GNU ar archive."""
    data = lib.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise ValueError(f"{lib} is not an ar archive")
    pos, longnames = 8, b""
    while pos + 60 <= len(data):
        hdr = data[pos : pos + 60]
        name = hdr[:16].decode().strip()
        size = int(hdr[48:58].decode().strip())
        body = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)
        if name == "//":
            longnames = body
            continue
        if name in ("/", "/SYM64/") or name.startswith("__.SYMDEF"):
            continue
        if name.startswith("/") and name[1:].isdigit():
            off = int(name[1:])
            name = longnames[off : longnames.index(b"/\n", off)].decode()
        yield name.rstrip("/"), body


def archive_objects(libs: Iterable[Path]) -> dict[str, dict[str, int]]:
    """Bytes per archive member and section kind (before linking and --gc-sections)."""
    import io

    from elftools.elf.elffile import ELFFile

    per: dict[str, dict[str, int]] = {}
    for lib in libs:
        for member, body in _archive_members(lib):
            d = per.setdefault(f"{lib.name}({member})", dict.fromkeys(KINDS, 0))
            for s in ELFFile(io.BytesIO(body)).iter_sections():
                kind = _kind(s["sh_type"], s["sh_flags"])
                if kind is not None:
                    d[kind] += s["sh_size"]
    return per


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------


def _cats_symbols(symbols: list[dict[str, Any]], sections: list[Section]) -> list[dict[str, Any]]:
    kind_of = {s.name: s.kind for s in sections}
    out = []
    for sym in symbols:
        if sym["type"] != "object" or "cats" not in sym["name"].lower():
            continue
        kind = kind_of.get(sym["section"], "?")
        region = "ram" if kind == "bss" else ("flash+ram" if kind == "data" else "flash")
        role = "other"
        if not _NANOPB_DESCRIPTOR.search(sym["name"]):
            role = next(
                (
                    r
                    for r, pat, where in CATS_ROLES
                    if where in region and re.search(pat, sym["name"], re.IGNORECASE)
                ),
                "other",
            )
        out.append({**sym, "role": role, "kind": kind, "region": region})
    out.sort(key=lambda s: -s["size"])
    return out


def size_report(
    elf: Path,
    map_path: Path | None = None,
    libs: Iterable[Path] = (),
    flash_limit: int = FLASH_LIMIT,
    ram_limit: int = RAM_LIMIT,
) -> dict[str, Any]:
    """Everything `cats size --json` prints, as a dict."""
    elf = Path(elf)
    if not elf.is_file():
        raise FileNotFoundError(f"no ELF at {elf}")
    sections = elf_sections(elf)
    totals = dict.fromkeys(KINDS, 0)
    for s in sections:
        totals[s.kind] += s.size
    flash = totals["text"] + totals["rodata"] + totals["data"]
    ram = totals["data"] + totals["bss"]
    if map_path is None:
        for cand in (elf.with_suffix(".map"), elf.with_name(elf.name + ".map")):
            if cand.is_file():
                map_path = cand
                break
    libs = [Path(p) for p in libs]
    if map_path is not None:
        objects, source = map_objects(Path(map_path), sections), f"map:{map_path}"
    elif libs:
        objects, source = archive_objects(libs), "archives (pre-link section sizes)"
    else:
        objects, source = {}, "none (link with -Wl,-Map or pass --lib)"
    obj_rows = [
        {
            "object": name,
            **d,
            "flash": d["text"] + d["rodata"] + d["data"],
            "ram": d["data"] + d["bss"],
        }
        for name, d in objects.items()
    ]
    obj_rows.sort(key=lambda r: (-(r["flash"] + r["ram"]), r["object"]))
    cats = _cats_symbols(elf_symbols(elf), sections)
    roles: dict[str, int] = {}
    for s in cats:
        roles[s["role"]] = roles.get(s["role"], 0) + s["size"]
    fits = flash <= flash_limit and ram <= ram_limit
    return {
        "ok": fits,
        "elf": str(elf),
        "totals": totals,
        "flash_bytes": flash,
        "ram_bytes": ram,
        "limits": {"flash_bytes": flash_limit, "ram_bytes": ram_limit},
        "flash_used": flash / flash_limit,
        "ram_used": ram / ram_limit,
        "fits": fits,
        "sections": [s.__dict__ for s in sections],
        "objects_source": source,
        "objects": obj_rows,
        "cats_symbols": cats,
        "cats_roles": roles,
    }


def _bytes(text: str) -> int:
    """'262144', '256K', '256KiB', '1M', '1MiB' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)(?:i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    mult = {"": 1, "k": KIB, "m": KIB * KIB}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def format_report(r: dict[str, Any], top: int = 15) -> str:
    t = r["totals"]
    lim = r["limits"]
    lines = [
        f"{r['elf']}",
        f"  text {t['text']:>9,}  rodata {t['rodata']:>9,}  data {t['data']:>7,}  "
        f"bss {t['bss']:>9,}",
        f"  flash {r['flash_bytes']:>9,} / {lim['flash_bytes']:,} ({100 * r['flash_used']:.1f} %)"
        f"   RAM {r['ram_bytes']:>9,} / {lim['ram_bytes']:,} ({100 * r['ram_used']:.1f} %)"
        f"   {'fits' if r['fits'] else 'DOES NOT FIT'}",
        "",
        f"  {'section':<16}{'kind':<8}{'address':>12}{'size':>10}",
    ]
    for s in r["sections"]:
        lines.append(f"  {s['name']:<16}{s['kind']:<8}{s['addr']:>#12x}{s['size']:>10,}")
    if r["objects"]:
        lines += [
            "",
            f"  per object file ({r['objects_source']}; top {top} by flash + RAM)",
            f"  {'object':<44}{'text':>9}{'rodata':>9}{'data':>7}{'bss':>9}",
        ]
        for o in r["objects"][:top]:
            lines.append(
                f"  {o['object'][:43]:<44}{o['text']:>9,}{o['rodata']:>9,}{o['data']:>7,}"
                f"{o['bss']:>9,}"
            )
    if r["cats_symbols"]:
        lines += ["", f"  {'CATS symbol':<36}{'role':<14}{'region':<10}{'size':>10}"]
        for s in r["cats_symbols"][:top]:
            lines.append(f"  {s['name'][:35]:<36}{s['role']:<14}{s['region']:<10}{s['size']:>10,}")
    return "\n".join(lines)
