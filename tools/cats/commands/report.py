"""`cats report`: per-node RAM, flash and air bytes per inference, and how much larger a model a
swarm holds than one node (see ``cats.analysis.resource`` for every term of the model)."""

from __future__ import annotations

import argparse
from typing import Any

from cats.analysis import resource
from cats.model.config import PRESETS, ModelConfig, preset

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
    p.add_argument(
        "--baselines",
        action="store_true",
        help="also Voltage (Hu 2024), Astra (Liu 2025), Bochem 2025, AllGather and CATS by the "
        "paper's reference formulas (calculate_resources.py; one attention block), with this "
        "project's whole-model figures beside them",
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
    fixed, fixed_detail, _ = resource.scale_ratios(
        nodes, ps, cfg, limits, link, fixed_blocks=cfg.blocks
    )
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
        "scale_ratio_fixed_depth": fixed,
        "scale_fixed_depth_detail": fixed_detail,
        "notes": [
            "methods: single = one device (D = 1); allgather = same split, p = 0, full rows and "
            "receive buffers; cats = SomeGather, every node keeps ceil((1-p) w) of its w "
            "columns (>= 1) in every exchange",
            "air_* counts what a node sends in the SomeGather exchanges; the head exchange "
            "sends one row (last token / pooled row); result_payload_bytes (output slice to the "
            "gateway) is separate",
            "scale_ratio[D] = stored params of the largest (F, L) model D nodes hold (heads 16, "
            "FFN = F, best configured p, any D' <= D nodes) / largest model one node holds",
            f"scale_ratio_fixed_depth[D]: the same at the preset's fixed depth L = {cfg.blocks} "
            "(only the width F is searched), as the paper scales its model",
            "code_bytes and runtime_ram_bytes: "
            + resource.FIXED_COSTS_SOURCE
            + " (Zephyr node images without weights, manifest and arena)",
        ],
    }
    if args.baselines:
        result["baselines"] = baselines(cfg, nodes, ps, rows)
    if not getattr(args, "json", False):
        print(format_table(result))
        if args.baselines:
            print(format_baselines(result["baselines"]))
    return result


def baselines(
    cfg: ModelConfig, nodes: list[int], ps: list[float], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """The reference's per-block formulas for every method at each D (CATS at each p), and this
    project's whole-model per-node maxima for the methods it runs (allgather, cats)."""
    whole = {(r["nodes"], r["method"], r["p"]): r["max"] for r in rows}
    out = []
    for d in nodes:
        if d < 2:
            continue
        for method in resource.BASELINES:
            for p in ps if method == "cats" else [0.0]:
                ref = resource.baseline_resources(method, d, cfg.tokens, cfg.features, cfg.heads, p)
                w = whole.get((d, method, p))
                out.append(
                    {
                        "nodes": d,
                        "method": method,
                        "name": resource.BASELINE_NAMES[method],
                        "p": p,
                        "attention_block": ref,
                        "whole_model": None
                        if w is None
                        else {
                            "ram_bytes": w["ram_bytes"],
                            "flash_bytes": w["flash_bytes"],
                            "air_bytes": w["air_bytes_on_air"],
                        },
                    }
                )
    return {
        "shape": {"tokens": cfg.tokens, "features": cfg.features, "heads": cfg.heads},
        "scope": "attention_block: one multi-head attention block by the paper's reference "
        "formulas (calculate_resources.py), elements = int8 bytes, per device; whole_model: "
        "this project's resource model of the whole int8 model, max over nodes (RAM incl. "
        "runtime, flash incl. code, air bytes per inference)",
        "rows": out,
    }


def format_baselines(b: dict[str, Any]) -> str:
    kib = resource.KIB
    sh = b["shape"]
    lines = [
        f"baselines (N={sh['tokens']}, F={sh['features']}, H={sh['heads']}): attention block by "
        "the reference formulas | this project's whole model (KiB, per device)",
        f"{'D':>3} {'method':<24} {'p':>4} {'RAM':>8} {'flash':>8} {'com':>8} | "
        f"{'RAM':>8} {'flash':>8} {'air':>8}",
    ]
    for r in b["rows"]:
        a, w = r["attention_block"], r["whole_model"]
        right = (
            f"{w['ram_bytes'] / kib:>8.1f} {w['flash_bytes'] / kib:>8.1f} "
            f"{w['air_bytes'] / kib:>8.2f}"
            if w
            else f"{'-':>8} {'-':>8} {'-':>8}"
        )
        lines.append(
            f"{r['nodes']:>3} {r['name']:<24} {r['p']:>4g} {a['ram'] / kib:>8.2f} "
            f"{a['flash'] / kib:>8.2f} {a['com'] / kib:>8.2f} | {right}"
        )
    return "\n".join(lines)


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
    lines.append("scale ratio (largest model D nodes hold / one node), free (F, L) search:")
    lines.append("  " + "  ".join(f"{d}:{v:.2f}x" for d, v in result["scale_ratio"].items()))
    fixed = result.get("scale_ratio_fixed_depth")
    if fixed:
        lines.append(
            f"scale ratio at the fixed depth L = {result['config']['blocks']} (the paper's way):"
        )
        lines.append("  " + "  ".join(f"{d}:{v:.2f}x" for d, v in fixed.items()))
    return "\n".join(lines)
