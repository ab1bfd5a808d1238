"""West tooling: west.yml (T2 manifest), the repository root's zephyr/module.yml, and the
extension commands of tools/west-commands.yml run in real west workspaces made offline in a
temporary directory.

The workspace is a git repository made from the working tree as it is (tracked and untracked,
not ignored, files: a clone of HEAD would miss what is not committed), initialised with
`west init -l`. Nothing is fetched: Zephyr is made inactive (`manifest.project-filter -zephyr`;
without it every west command fails until `west update` has cloned Zephyr, whose west.yml the
manifest imports). The Zephyr node build runs only with a Zephyr tree (ZEPHYR_BASE)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("west", reason="west is not installed (requirements.txt pins west==1.5.0)")

ROOT = Path(__file__).resolve().parents[1]
NANOPB = ROOT / "build" / "third_party" / "nanopb-0.4.9.1"
MBEDTLS = ROOT / "build" / "third_party" / "mbedtls-2.28.3"  # scripts/fetch_mbedtls.sh
NODES = 4  # the `test` preset (16 heads) partitioned for 4 nodes: small, quick to build
COMMANDS = ("cats-partition", "cats-build", "cats-size", "cats-sim")
GIT = [
    "git",
    "-c",
    "user.name=cats-test",
    "-c",
    "user.email=cats@test",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "init.defaultBranch=main",
]


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(var, None)
    return env


def west(cwd: Path, *args: str, ok: bool | None = True, timeout: float = 600):
    """Run `west ARGS` (this interpreter's west) in `cwd`; with --json in ARGS the parsed JSON
    object is returned as well. ok=True: must succeed, False: must fail, None: either.
    `west init` runs without ZEPHYR_BASE: inherited from a Zephyr workspace (the usual setup)
    it makes west find that workspace and refuse ("already initialized")."""
    env = dict(os.environ)
    if args and args[0] == "init":
        env.pop("ZEPHYR_BASE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "west", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if ok is not None:
        assert (proc.returncode == 0) == ok, (
            f"west {' '.join(args)}: exit {proc.returncode}\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-4000:]}"
        )
    data = json.loads(proc.stdout) if "--json" in args and proc.stdout.strip() else None
    return proc, data


def _commit_tree(repo: Path) -> None:
    env = _git_env()
    subprocess.run([*GIT, "init", "-q", str(repo)], check=True, env=env)
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True, env=env)
    subprocess.run([*GIT, "commit", "-q", "-m", "snapshot"], cwd=repo, check=True, env=env)
    subprocess.run([*GIT, "branch", "-M", "main"], cwd=repo, check=True, env=env)


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    """This working tree (tracked + untracked, not ignored) committed to a fresh repository,
    plus the nanopb C runtime and the mbed TLS sources scripts/fetch_nanopb.sh and
    scripts/fetch_mbedtls.sh left in build/third_party (as a `make setup` of the copy would,
    without the download)."""
    top = tmp_path_factory.mktemp("west")
    repo = top / "ws" / "cats"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env=_git_env(),
    ).stdout
    for rel in filter(None, listed.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():  # tracked but deleted in the working tree: not copied
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / rel)
    _commit_tree(repo)
    for third in (NANOPB, MBEDTLS):
        if third.is_dir():
            shutil.copytree(third, repo / "build" / "third_party" / third.name)
    return repo


@pytest.fixture(scope="module")
def ws(repo_copy: Path) -> Path:
    """`west init -l` workspace (topdir = the copy's parent) with Zephyr inactive."""
    top = repo_copy.parent
    west(top, "init", "-l", str(repo_copy))
    west(top, "config", "manifest.project-filter", "--", "-zephyr")
    return top


def _needs_nanopb() -> None:
    if not (NANOPB / "pb_decode.c").is_file():
        pytest.skip("nanopb C runtime missing: run scripts/fetch_nanopb.sh (make setup)")


def _needs_arm() -> None:
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("cmake") is None:
        pytest.skip("arm-none-eabi-gcc / cmake not installed (scripts/setup.sh)")


@pytest.fixture(scope="module")
def partition(ws: Path) -> Path:
    _, res = west(ws, "cats-partition", "--preset", "test", "--nodes", str(NODES), "--json")
    assert res["ok"] and res["nodes"] == NODES
    return Path(res["out"])


@pytest.fixture(scope="module")
def m4_builds(ws: Path, partition: Path) -> dict:
    _needs_nanopb()
    _needs_arm()
    _, res = west(ws, "cats-build", "--m4", "--json")
    return res


@pytest.fixture(scope="module")
def host_build(ws: Path) -> dict:
    _needs_nanopb()
    _, res = west(ws, "cats-build", "--host", "--json")
    return res


# ----------------------------------------------------------------------------------------------
# The manifest, the module description, the command registry (no workspace needed)
# ----------------------------------------------------------------------------------------------


def test_west_yml_is_a_t2_manifest_pinning_zephyr_with_an_allowlist() -> None:
    man = yaml.safe_load((ROOT / "west.yml").read_text())["manifest"]
    cmds = man["self"]["west-commands"]
    assert (ROOT / cmds).is_file() and cmds == "tools/west-commands.yml"
    (zephyr,) = [p for p in man["projects"] if p["name"] == "zephyr"]
    assert re.fullmatch(r"v4\.\d+\.\d+", zephyr["revision"]), zephyr["revision"]
    allow = set(zephyr["import"]["name-allowlist"])
    assert {"nanopb", "cmsis_6", "hal_nordic"} <= allow
    assert len(man["projects"]) == 1  # everything else comes from Zephyr's manifest, filtered


def test_west_commands_yml_names_existing_classes() -> None:
    from west.commands import WestCommand

    from cats.commands import west as west_commands

    spec = yaml.safe_load((ROOT / "tools" / "west-commands.yml").read_text())
    (entry,) = spec["west-commands"]
    assert (ROOT / entry["file"]).resolve() == Path(west_commands.__file__).resolve()
    names = {c["name"]: c["class"] for c in entry["commands"]}
    assert set(names) == set(COMMANDS)
    for name, cls in names.items():
        cmd = getattr(west_commands, cls)()
        assert isinstance(cmd, WestCommand) and cmd.name == name and cmd.help


def test_root_module_yml_points_into_cats_zephyr_module() -> None:
    root_spec = yaml.safe_load((ROOT / "zephyr" / "module.yml").read_text())
    mod_spec = yaml.safe_load((ROOT / "cats_zephyr_module" / "zephyr" / "module.yml").read_text())
    # keys of Zephyr's module.yml schema (scripts/zephyr_module.py METADATA_SCHEMA)
    assert set(root_spec) <= {"name", "build", "tests", "samples", "boards", "blobs"}
    assert set(root_spec["build"]) <= {
        "cmake",
        "kconfig",
        "depends",
        "settings",
        "cmake-ext",
        "kconfig-ext",
        "sysbuild-cmake",
        "sysbuild-kconfig",
    }
    cmake = ROOT / root_spec["build"]["cmake"]
    kconfig = ROOT / root_spec["build"]["kconfig"]
    assert (cmake / "CMakeLists.txt").is_file() and kconfig.is_file()
    for rel in root_spec.get("samples", []) + root_spec.get("tests", []):
        assert (ROOT / rel).is_dir(), rel
    # the module directory's own description: the same module (name, CMakeLists, Kconfig)
    mdir = ROOT / "cats_zephyr_module"
    assert root_spec["name"] == mod_spec["name"] == "cats"
    assert (mdir / mod_spec["build"]["cmake"]).resolve() == cmake.resolve()
    assert (mdir / mod_spec["build"]["kconfig"]).resolve() == kconfig.resolve()
    # the module's CMakeLists finds proto/ from its own directory, wherever the module root is
    text = (cmake / "CMakeLists.txt").read_text()
    assert "${CMAKE_CURRENT_LIST_DIR}/../proto/cats.proto" in text
    assert "ZEPHYR_CURRENT_MODULE_DIR}/../proto" not in text


def test_requirements_pin_west_and_its_dependencies() -> None:
    reqs = (ROOT / "requirements.txt").read_text()
    for pin in (
        "west==1.5.0",
        "colorama==",
        "docopt==",
        "pykwalify==",
        "ruamel.yaml==",
        "python-dateutil==",
        "packaging==",
        "PyYAML==",
    ):
        assert re.search(rf"^{re.escape(pin)}", reqs, re.MULTILINE), pin


# ----------------------------------------------------------------------------------------------
# The workspace
# ----------------------------------------------------------------------------------------------


def test_west_list_shows_the_manifest_repository(ws: Path, repo_copy: Path) -> None:
    proc, _ = west(ws, "list", "-f", "{name} {path} {abspath}")
    first = proc.stdout.splitlines()[0].split()
    assert first[0] == "manifest" and first[1] == "cats"
    assert Path(first[2]).resolve() == repo_copy.resolve()
    proc, _ = west(ws, "list", "--all", "-f", "{name} {revision} {cloned}")
    assert "zephyr v4.3.0 not-cloned" in proc.stdout  # pinned, inactive here, not fetched


def test_zephyr_module_scan_finds_cats_in_the_workspace(ws: Path, repo_copy: Path) -> None:
    """What scripts/zephyr_module.py does with west: every active project's root is checked for
    zephyr/module.yml (the manifest repository included); no ZEPHYR_EXTRA_MODULES needed."""
    proc, _ = west(ws, "list", "-f", "{abspath}")
    found = {}
    for root in map(Path, proc.stdout.split()):
        yml = root / "zephyr" / "module.yml"
        if yml.is_file():
            meta = yaml.safe_load(yml.read_text())
            found[meta.get("name", root.name)] = (root, meta)
    assert "cats" in found
    root, meta = found["cats"]
    assert root.resolve() == repo_copy.resolve()
    assert (root / meta["build"]["cmake"] / "CMakeLists.txt").is_file()
    assert (root / meta["build"]["kconfig"]).is_file()


def test_every_command_has_help(ws: Path) -> None:
    proc, _ = west(ws, "help")
    for name in COMMANDS:
        assert name in proc.stdout
        out, _ = west(ws, name, "--help")
        assert out.stdout.startswith(f"usage: west {name}") and "--json" in out.stdout


def test_cats_partition_writes_the_export(ws: Path, partition: Path) -> None:
    summary = json.loads((partition / "partition.json").read_text())
    assert summary["nodes"] == NODES and summary["pruning_ratio"] == 0
    for d in range(NODES):
        assert (partition / f"node-{d}" / "manifest.pb").is_file()
        assert (partition / f"node-{d}" / "weights.bin").stat().st_size == (
            summary["node_files"][d]["blob_bytes"]
        )
    # same bytes as `cats export`; fewer nodes into the same directory drop the stale ones
    out = ws / "build" / "p-again"
    west(ws, "cats-partition", "--preset", "test", "--nodes", str(NODES), "-o", str(out))
    for d in range(NODES):
        for f in ("manifest.pb", "weights.bin"):
            assert (out / f"node-{d}" / f).read_bytes() == (
                partition / f"node-{d}" / f
            ).read_bytes()
    _, res = west(
        ws, "cats-partition", "--preset", "test", "--nodes", "2", "-o", str(out), "--json"
    )
    assert res["nodes"] == 2 and res["removed_stale"] == ["node-2", "node-3"]
    assert sorted(p.name for p in out.glob("node-*")) == ["node-0", "node-1"]
    proc, res = west(ws, "cats-partition", "--preset", "test", "--json", ok=False)
    assert res["ok"] is False and "--nodes" in res["error"]
    # the paper's input/output blocks, as `cats export --io paper` writes them
    paper, ref = ws / "build" / "p-paper", ws / "build" / "p-paper-ref"
    west(ws, "cats-partition", "--preset", "test", "--nodes", "2", "--io", "paper", "-o",
         str(paper))  # fmt: skip
    subprocess.run([sys.executable, "-m", "cats.cli", "export", "--preset", "test", "--nodes",
                    "2", "--io", "paper", "--out", str(ref)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    for f in ("partition.json", "node-0/manifest.pb", "node-1/weights.bin"):
        assert (paper / f).read_bytes() == (ref / f).read_bytes(), f
    assert (paper / "partition.json").read_bytes() != (out / "partition.json").read_bytes()


def test_cats_build_host_reports_the_simulator_executables(host_build: dict, repo_copy) -> None:
    host = host_build["host"]
    assert Path(host["build_dir"]).resolve() == (repo_copy / "build" / "host").resolve()
    for name in ("cats_node_sim", "cats_gateway_sim"):
        exe = Path(host["executables"][name])
        assert exe.is_file() and os.access(exe, os.X_OK)


def test_cats_build_m4_one_image_per_node(m4_builds: dict, partition: Path) -> None:
    assert m4_builds["ok"] and m4_builds["nodes"] == NODES
    assert Path(m4_builds["partition_dir"]).resolve() == partition.resolve()
    assert [b["node"] for b in m4_builds["m4"]] == list(range(NODES))
    for b in m4_builds["m4"]:
        assert Path(b["elf"]).is_file() and Path(b["map"]).is_file()
        assert Path(b["build_dir"]).name == f"m4-node-{b['node']}"


def test_cats_size_on_the_m4_builds(ws: Path, m4_builds: dict, partition: Path) -> None:
    _, res = west(ws, "cats-size", "--m4", "--json")
    assert res["ok"] and res["fits"]
    rows = res["nodes"]
    assert [r["node"] for r in rows] == list(range(NODES))
    for r in rows:
        node_dir = partition / f"node-{r['node']}"
        # the linked partition, as the symbol table shows it, is the exported one
        assert r["weights_blob"] == (node_dir / "weights.bin").stat().st_size
        assert r["manifest"] == (node_dir / "manifest.pb").stat().st_size
        assert r["arena"] > 0 and r["frame_buffers"] > 0
        t = r["totals"]
        assert r["flash_bytes"] == t["text"] + t["rodata"] + t["data"]
        assert r["ram_bytes"] == t["data"] + t["bss"]
        # limits: the FLASH / RAM regions of the nRF52840 linker script, from the map
        assert r["limits"] == {"flash_bytes": 1024 * 1024, "ram_bytes": 256 * 1024}
        assert "linker map" in r["limits_source"]
    assert res["weights_blob_total"] == sum(r["weights_blob"] for r in rows)
    # the human table
    proc, _ = west(ws, "cats-size", "--m4")
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["node", "kind"] and "weights" in lines[0]
    assert sum(1 for ln in lines if re.match(r"^\s+\d+ m4 ", ln)) == NODES
    assert "limits: flash 1,048,576 B, RAM 262,144 B" in proc.stdout
    # an explicit image, against a board's limits
    elf = m4_builds["m4"][1]["elf"]
    _, one = west(ws, "cats-size", elf, "--board", "nrf52833dk/nrf52833", "--json")
    assert [r["node"] for r in one["nodes"]] == [1]
    assert one["nodes"][0]["limits"] == {"flash_bytes": 512 * 1024, "ram_bytes": 128 * 1024}


def test_cats_size_fails_when_a_node_does_not_fit(ws: Path, m4_builds: dict) -> None:
    proc, res = west(ws, "cats-size", "--m4", "--ram-limit", "16K", "--json", ok=False)
    assert proc.returncode == 1 and res["ok"] is False and res["fits"] is False
    for r in res["nodes"]:
        assert not r["fits"] and r["limits"]["ram_bytes"] == 16 * 1024
        assert r["over"] and r["over"][0].startswith("RAM ")
    assert "does not fit" in proc.stderr
    proc, _ = west(ws, "cats-size", "--m4", "--ram-limit", "16K", ok=False)
    assert "NO: RAM" in proc.stdout  # the table is printed before the failure


def test_cats_sim_runs_the_partition(ws: Path, partition: Path, host_build: dict) -> None:
    pytest.importorskip("cats.sim.run", reason="the simulator (cats sim) is not in this checkout")
    _, res = west(ws, "cats-sim", "--inferences", "2", "--json")
    assert res["ok"] and res["bit_exact"] and res["nodes"] == NODES and res["inferences"] == 2
    assert Path(res["partition_dir"]).resolve() == partition.resolve()
    assert all(r["status"] == 0 for r in res["per_inference"])
    _, lossy = west(
        ws,
        "cats-sim",
        "--inferences",
        "2",
        "--loss",
        "iid:0.2",
        "--seed",
        "3",
        "--link",
        "ble2m",
        "--json",
    )
    assert lossy["ok"] and lossy["bit_exact"] and lossy["frames_lost"] > 0


ZEPHYR_BASE = os.environ.get("ZEPHYR_BASE")


@pytest.mark.skipif(bool(ZEPHYR_BASE), reason="ZEPHYR_BASE is set: Zephyr is available")
def test_cats_build_without_zephyr_says_what_is_missing(ws: Path, partition: Path) -> None:
    proc, res = west(ws, "cats-build", "--json", ok=False)
    assert res["ok"] is False and "Zephyr is not available" in res["error"]
    assert "west update" in res["hint"] and "--m4" in res["hint"]
    assert "west update" in proc.stderr


@pytest.mark.skipif(
    not (ZEPHYR_BASE and Path(ZEPHYR_BASE, "cmake", "modules", "zephyr_default.cmake").is_file()),
    reason="no Zephyr tree: set ZEPHYR_BASE to a Zephyr 4.3.0 checkout (west.yml pins v4.3.0, "
    "with its modules nanopb, cmsis_6, hal_nordic) and a toolchain (Zephyr SDK, or "
    "arm-none-eabi-gcc with ZEPHYR_TOOLCHAIN_VARIANT=cross-compile) to build the "
    "nrf52840dk/nrf52840 node images",
)
@pytest.mark.parametrize("link", ["ieee802154", "ble"])
def test_cats_build_zephyr_nrf52840dk(ws: Path, partition: Path, link: str) -> None:
    root = f"build-{link}"
    _, res = west(ws, "cats-build", "--build-root", root, "--partition", str(partition),
                  "--link", link, "-n", "0", "-n", "3", "--gateway", "--json",
                  timeout=3600)  # fmt: skip
    assert res["ok"] and res["zephyr"]["board"] == "nrf52840dk/nrf52840"
    for row in res["zephyr"]["nodes"]:
        elf = Path(row["elf"])
        assert elf.is_file() and row["flash"] == f"west flash -d {row['build_dir']}"
        config = (elf.parent / ".config").read_text()
        assert f"CONFIG_CATS_NODE_ID={row['node']}" in config
        assert f"CONFIG_CATS_LINK_{link.upper()}=y" in config
    assert Path(res["zephyr"]["gateway"]["elf"]).is_file()
    _, size = west(ws, "cats-size", "--build-root", root, "--zephyr", "--json")
    assert size["fits"] and [r["node"] for r in size["nodes"]] == [0, 3]
    for r in size["nodes"]:  # the real image, against the board's own memory regions
        assert r["kind"] == "zephyr" and r["weights_blob"] > 0 and r["arena"] > 0
        assert "linker map" in r["limits_source"] and r["totals"]["text"] > 20_000


# ----------------------------------------------------------------------------------------------
# Another product's workspace using this repository (README, "Firmware (west)")
# ----------------------------------------------------------------------------------------------


def _product(tmp_path: Path, project: dict, filter_zephyr: bool) -> Path:
    top = tmp_path / "product-ws"
    man = top / "product"
    man.mkdir(parents=True)
    (man / "west.yml").write_text(yaml.safe_dump({"manifest": {"projects": [project]}}))
    _commit_tree(man)
    west(top, "init", "-l", str(man))
    if filter_zephyr:
        west(top, "config", "manifest.project-filter", "--", "-zephyr")
    west(top, "update")
    return top


def test_product_lists_this_repository_as_a_project(tmp_path: Path, repo_copy: Path) -> None:
    top = _product(
        tmp_path,
        {
            "name": "cats",
            "url": str(repo_copy),
            "revision": "main",
            "path": "modules/lib/cats",
            "west-commands": "tools/west-commands.yml",
        },
        False,
    )
    proc, _ = west(top, "list", "-f", "{name} {path}")
    assert "cats modules/lib/cats" in proc.stdout
    assert (top / "modules" / "lib" / "cats" / "zephyr" / "module.yml").is_file()
    proc, _ = west(top, "cats-size", "--help")
    assert proc.stdout.startswith("usage: west cats-size")


def test_product_imports_this_manifest_with_an_allowlist(tmp_path: Path, repo_copy: Path) -> None:
    allow = ["zephyr", "nanopb", "cmsis_6", "hal_nordic"]
    top = _product(
        tmp_path,
        {
            "name": "cats",
            "url": str(repo_copy),
            "revision": "main",
            "path": "modules/lib/cats",
            "import": {"name-allowlist": allow},
        },
        True,
    )
    proc, _ = west(top, "list", "--all", "-f", "{name} {revision}")
    assert "zephyr v4.3.0" in proc.stdout  # Zephyr as this repository pins it
    proc, _ = west(top, "cats-partition", "--help")  # self: west-commands of the import
    assert proc.stdout.startswith("usage: west cats-partition")
