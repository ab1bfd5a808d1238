"""`cats report`: per-node RAM, flash and air bytes per inference, and how much larger a model a
swarm holds than one node (see ``cats.analysis.resource`` for every term of the model)."""

from __future__ import annotations

import argparse
from typing import Any

from cats.analysis import resource
from cats.model.config import PRESETS, preset

DEFAULT_P = (0.0, 0.3, 0.5, 0.7, 0.9)


def _int_list(items: list[str]) -> list[int]:
    """'1..16', '1-16', '1,2,4' or several such words -> sorted unique ints."""
    out: set[int] = set()
    for item in items:
        for word in item.split(","):
            word = word.strip()
            if not word:
                continue
            for sep in ("..", "-"):
                if sep in word:
                    a, b = word.split(sep, 1)
                    out.update(range(int(a), int(b) + 1))
                    break
            else:
                out.add(int(word))
    return sorted(out)


def _float_list(items: list[str]) -> list[float]:
    return sorted({float(w) for item in items for w in item.split(",") if w.strip()})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="per-node RAM / flash / air bytes and the scale ratio vs one node",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--preset", default="verytiny", choices=sorted(PRESETS))
    p.add_argument(
        "--nodes", nargs="+", default=["1..16"], help="node counts: 1..16 (default), 2,4,8 or 8"
    )
    p.add_argument(
        "--p",
        nargs="+",
        default=[",".join(f"{x:g}" for x in DEFAULT_P)],
        help="CATS pruning ratios (default 0,0.3,0.5,0.7,0.9)",
    )
    p.add_argument(
        "--link",
        choices=sorted(resource.LINKS),
        default="ieee802154",
        help="radio link of the air bytes (cats.wire.phy, as in `cats sim --link`)",
    )
    p.add_argument("--ram-kib", type=float, default=256)
    p.add_argument("--flash-kib", type=float, default=1024)
    p.add_argument(
        "--code-kib",
        type=float,
        default=resource.CODE_BYTES / resource.KIB,
        help="runtime code size in flash (default: measured on the Zephyr node images, "
        "bench/image_size; else an estimate)",
    )
    p.add_argument(
        "--runtime-ram-kib",
        type=float,
        default=resource.RUNTIME_RAM_BYTES / resource.KIB,
        help="RTOS, stacks and driver RAM (estimate)",
    )
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> dict[str, Any]:
    cfg = preset(args.preset)
    nodes = _int_list(args.nodes)
    ps = _float_list(args.p)
    if not nodes or nodes[0] < 1 or nodes[-1] > cfg.heads:
        raise ValueError(f"--nodes must lie in 1..{cfg.heads} (heads)")
    if not ps or ps[0] < 0 or ps[-1] >= 1:
        raise ValueError("--p values must lie in [0, 1)")
    link = resource.LINKS[args.link]
    limits = resource.Limits(
        ram_bytes=round(args.ram_kib * resource.KIB),
        flash_bytes=round(args.flash_kib * resource.KIB),
        code_bytes=round(args.code_kib * resource.KIB),
        runtime_ram_bytes=round(args.runtime_ram_kib * resource.KIB),
    )
    rows = []
    for d in nodes:
        if d == 1:
            rows.append(resource.node_resources(cfg, 1, 0.0, "single", link, limits))
            continue
        rows.append(resource.node_resources(cfg, d, 0.0, "allgather", link, limits))
        for p in ps:
            rows.append(resource.node_resources(cfg, d, p, "cats", link, limits))
    ratio, detail, by_p = resource.scale_ratios(nodes, ps, cfg, limits, link)
    single = resource.single_node_capacity(cfg, limits, link)
    result = {
        "config": {"preset": args.preset, **cfg.to_dict(), "params": resource.param_count(cfg)},
        "limits": limits.to_dict(),
        "link": link.to_dict(),
        "rows": rows,
        "scale_ratio": ratio,
        "scale_detail": detail,
        "scale_ratio_by_p": by_p,
        "scale_single_node": single.to_dict(),
        "notes": [
            "methods: single = one device (D = 1); allgather = same split, p = 0, full rows and "
            "receive buffers; cats = SomeGather, every node keeps ceil((1-p) w) of its w "
            "columns (>= 1) in every exchange",
            "air_* counts what a node sends in the SomeGather exchanges; the head exchange "
            "sends one row (last token / pooled row); result_payload_bytes (output slice to the "
            "gateway) is separate",
            "scale_ratio[D] = stored params of the largest (F, L) model D nodes hold (heads 16, "
            "FFN = F, best configured p, any D' <= D nodes) / largest model one node holds",
            "code_bytes and runtime_ram_bytes: "
            + resource.FIXED_COSTS_SOURCE
            + " (Zephyr node images without weights, manifest and arena)",
        ],
    }
    if not getattr(args, "json", False):
        print(format_table(result))
    return result


def format_table(result: dict[str, Any]) -> str:
    kib = resource.KIB
    lim = result["limits"]
    lines = [
        f"{result['config']['preset']}: {result['config']['params']:,} params; limits "
        f"{lim['ram_bytes'] / kib:g} KiB RAM, {lim['flash_bytes'] / kib:g} KiB flash; "
        f"link {result['link']['name']} (MTU {result['link']['column_mtu']} B)",
        f"{'D':>3} {'method':<9} {'p':>4} {'RAM KiB':>8} {'flash KiB':>9} "
        f"{'air KiB':>8} {'frames':>6} {'fits':>4}   (max over nodes, per inference)",
    ]
    for r in result["rows"]:
        m = r["max"]
        lines.append(
            f"{r['nodes']:>3} {r['method']:<9} {r['p']:>4g} {m['ram_bytes'] / kib:>8.1f} "
            f"{m['flash_bytes'] / kib:>9.1f} {m['air_bytes_on_air'] / kib:>8.2f} "
            f"{m['air_frames']:>6} {'yes' if r['fits'] else 'NO':>4}"
        )
    lines.append("scale ratio (largest model D nodes hold / one node):")
    lines.append("  " + "  ".join(f"{d}:{v:.2f}x" for d, v in result["scale_ratio"].items()))
    return "\n".join(lines)
