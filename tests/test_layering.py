"""Import layering: every module of tools/cats imports only its own layer and the layers below
it (cats.LAYERS, bottom to top), the modules import each other without cycles, and the portable
C core (cats_zephyr_module/src/core) includes nothing of the Zephyr port, the gateway, the
runner, the host stations or Zephyr itself. Function-local imports count like module-level ones.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import cats

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tools" / "cats"
CORE = ROOT / "cats_zephyr_module" / "src" / "core"
LAYERS = cats.LAYERS
# modules directly under cats/ and the layer they belong to
TOP_LEVEL = {"cats": "base", "cats.cli": "commands"}


# --------------------------------------------------------------------------- Python


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer of a cats module name, None when it is in none (a misplaced module)."""
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def imports_of(path: Path, module: str, known: set[str] | frozenset = frozenset()) -> list:
    """(line, imported cats module) for every import in the file, at any depth; `from A import
    B` imports the module A.B when that is one of `known` (or A is the package itself)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "cats"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            if base.split(".")[0] != "cats":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                if base == "cats":  # `from cats import sim`: a subpackage, or __version__
                    top = a.name.startswith("_") or a.name.isupper()
                    found.append((node.lineno, "cats" if top else sub))
                else:  # `from cats.sim import swarm` (module) or `from cats.sim.swarm import Swarm`
                    found.append((node.lineno, sub if sub in known else base))
    return found


def modules(package: Path) -> dict[str, Path]:
    return {
        module_name(p, package): p
        for p in sorted(package.rglob("*.py"))
        if "_generated" not in p.parts and "__pycache__" not in p.parts
    }


def layer_violations(package: Path) -> list[str]:
    """Every import of a higher layer (and every module in no layer), as readable lines."""
    problems = []
    mods = modules(package)
    for mod, path in mods.items():
        own = layer_of(mod)
        if own is None:
            problems.append(f"{mod}: in no layer (move it into one of {', '.join(LAYERS)})")
            continue
        for line, target in imports_of(path, mod, set(mods)):
            if target == "cats":  # the package itself: __version__, LAYERS
                continue
            theirs = layer_of(target)
            if theirs is None:
                problems.append(f"{mod}:{line} imports {target}, which is in no layer")
            elif LAYERS.index(theirs) > LAYERS.index(own):
                problems.append(f"{mod}:{line} ({own}) imports {target} ({theirs}), a higher layer")
    return problems


def import_cycles(package: Path) -> list[list[str]]:
    """Cycles of the module import graph (each once, from its smallest module)."""
    mods = modules(package)
    graph = {
        m: sorted({t for _, t in imports_of(p, m, set(mods)) if t in mods and t != m})
        for m, p in mods.items()
    }
    cycles: set[tuple[str, ...]] = set()

    def walk(node: str, stack: list[str]) -> None:
        for nxt in graph[node]:
            if nxt in stack:
                cyc = stack[stack.index(nxt) :]
                i = cyc.index(min(cyc))
                cycles.add(tuple(cyc[i:] + cyc[:i]))
            elif nxt > stack[0]:  # each cycle is found from its smallest module
                walk(nxt, stack + [nxt])

    for m in graph:
        walk(m, [m])
    return [list(c) for c in sorted(cycles)]


def test_every_module_imports_only_lower_layers() -> None:
    assert layer_violations(PACKAGE) == []


def test_no_import_cycles() -> None:
    assert import_cycles(PACKAGE) == []


def test_every_layer_is_a_documented_subpackage() -> None:
    for name in LAYERS:
        init = PACKAGE / name / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and name in doc, f"{init}: needs a docstring naming the layer's job"
        assert re.search(rf"^\s+{name}\s+\S", cats.__doc__, re.M), f"{name} not in cats.__doc__"


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_checker_reports_a_higher_layer_import(tmp_path: Path) -> None:
    pkg = tmp_path / "cats"
    _write(pkg, "__init__.py", "")
    _write(pkg, "model/__init__.py", "")
    _write(pkg, "model/ok.py", "from cats.base.paths import REPO_ROOT\nfrom . import other\n")
    _write(pkg, "model/other.py", "")
    _write(
        pkg, "model/bad.py", "def f():\n    from cats.sim.swarm import Swarm\n    return Swarm\n"
    )
    _write(pkg, "quant/bad.py", "from cats import commands\nimport cats.sim.run\n")
    _write(pkg, "stray.py", "")
    problems = layer_violations(pkg)
    assert any(p.startswith("cats.model.bad:2 (model) imports cats.sim.swarm") for p in problems)
    assert any(p.startswith("cats.quant.bad:1 (quant) imports cats.commands") for p in problems)
    assert any(p.startswith("cats.quant.bad:2 (quant) imports cats.sim.run") for p in problems)
    assert any(p.startswith("cats.stray: in no layer") for p in problems)
    assert not any("cats.model.ok" in p for p in problems), problems
    assert len(problems) == 4, problems


def test_checker_reports_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "cats"
    _write(pkg, "training/train.py", "from cats.training import evaluate\n")
    _write(pkg, "training/evaluate.py", "def f():\n    from cats.training.train import x\n")
    _write(pkg, "training/data.py", "")
    assert import_cycles(pkg) == [["cats.training.evaluate", "cats.training.train"]]


# --------------------------------------------------------------------------- C

# Layers above the portable core: their sources, and their public headers in include/cats.
C_ABOVE = ("src/zephyr", "src/gateway", "src/runner", "src/port", "host")
C_ABOVE_HEADERS = ("cats_gateway.h", "cats_gateway_service.h", "cats_runner.h", "cats_service.h")
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def core_include_violations(module: Path) -> list[str]:
    """Every #include of the core (src/core) that reaches a higher layer or Zephyr."""
    above = {h.name for d in C_ABOVE for h in (module / d).rglob("*.h")} | set(C_ABOVE_HEADERS)
    problems = []
    for src in sorted((module / "src" / "core").iterdir()):
        if src.suffix not in (".c", ".h"):
            continue
        text = src.read_text()
        for m in INCLUDE.finditer(text):
            name = m.group(2)
            line = text.count("\n", 0, m.start()) + 1
            parts = Path(name).parts
            why = None
            if parts[0] == "zephyr" or name in ("kernel.h", "device.h"):
                why = "a Zephyr header"
            elif ".." in parts or set(parts[:-1]) & {"zephyr", "gateway", "runner", "port", "host"}:
                why = "outside src/core"
            elif Path(name).name in above:
                why = "a header of a higher layer"
            if why:
                problems.append(f"{src.name}:{line} includes {m.group(1)}{name}: {why}")
    return problems


def test_c_core_includes_no_higher_layer() -> None:
    assert core_include_violations(ROOT / "cats_zephyr_module") == []


def test_c_checker_reports_violations(tmp_path: Path) -> None:
    mod = tmp_path / "cats_zephyr_module"
    _write(mod, "src/zephyr/cats_zephyr.h", "")
    _write(mod, "src/gateway/gw.c", "")
    _write(mod, "host/sim_net.h", "")
    _write(
        mod,
        "src/core/node.c",
        '#include <string.h>\n#include "cats/cats_node.h"\n#include <zephyr/kernel.h>\n'
        '#include "cats_zephyr.h"\n#include "../gateway/gw.h"\n#include "sim_net.h"\n'
        ' #  include "cats/cats_gateway.h"\n',
    )
    problems = core_include_violations(mod)
    assert [p.split(" includes")[0] for p in problems] == [
        "node.c:3",
        "node.c:4",
        "node.c:5",
        "node.c:6",
        "node.c:7",
    ], problems
