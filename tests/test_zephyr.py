"""The Zephyr module (cats_zephyr_module): static checks that always run, the kernels' ztest
suite compiled and run on the host through a ztest shim, and real `west build`s for native_sim
when a Zephyr tree is available (ZEPHYR_BASE set and `west` on PATH)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "cats_zephyr_module"
SHIM = ROOT / "tests" / "ztest_shim"
KERNEL_SUITE = MODULE / "tests" / "kernels"
SAMPLE = MODULE / "samples" / "node"
GATEWAY = MODULE / "samples" / "gateway"


# ----------------------------------------------------------------------------------------------
# Static checks (no Zephyr needed)
# ----------------------------------------------------------------------------------------------


def test_module_yml_points_at_existing_files() -> None:
    spec = yaml.safe_load((MODULE / "zephyr" / "module.yml").read_text())
    assert spec["name"] == "cats"
    build = spec["build"]
    assert (MODULE / build["cmake"] / "CMakeLists.txt").is_file()
    assert (MODULE / build["kconfig"]).is_file()


def _kconfig_symbols() -> set[str]:
    text = (MODULE / "Kconfig").read_text()
    syms = set(re.findall(r"^\s*(?:menu)?config\s+(\w+)", text, re.MULTILINE))
    syms |= set(re.findall(r"^\s*choice\s+(\w+)", text, re.MULTILINE))
    # `module = CATS` + Kconfig.template.log_config defines CATS_LOG_LEVEL (and its choice)
    if re.search(r"^module\s*=\s*CATS\s*$", text, re.MULTILINE) and (
        'source "subsys/logging/Kconfig.template.log_config"' in text
    ):
        syms.add("CATS_LOG_LEVEL")
    return syms


def _module_files() -> list[Path]:
    files = [p for p in MODULE.rglob("*") if p.is_file()]
    return [p for p in files if p.suffix in {".c", ".h", ".txt", ".conf", ".yaml", ".in"}]


def test_kconfig_symbols_used_are_defined() -> None:
    defined = _kconfig_symbols()
    assert {"CATS", "CATS_NODE_ID", "CATS_LINK_IEEE802154", "CATS_LINK_BLE", "CATS_LINK_SIM",
            "CATS_802154_CHANNEL", "CATS_ARENA_SIZE", "CATS_EXCHANGE_TIMEOUT_MS",
            "CATS_LOG_LEVEL"} <= defined  # fmt: skip
    used: dict[str, set[str]] = {}
    for path in _module_files():
        for sym in re.findall(r"\bCONFIG_(CATS\w*)", path.read_text(errors="replace")):
            if not sym.endswith("_"):  # "CONFIG_CATS_LINK_*" in prose
                used.setdefault(sym, set()).add(str(path.relative_to(ROOT)))
    missing = {s: sorted(f) for s, f in used.items() if s not in defined}
    assert not missing, f"CONFIG_ symbols not in cats_zephyr_module/Kconfig: {missing}"
    assert len(used) >= 8


def test_kconfig_is_balanced() -> None:
    text = (MODULE / "Kconfig").read_text()
    ifs = len(re.findall(r"^if\s", text, re.MULTILINE))
    endifs = len(re.findall(r"^endif", text, re.MULTILINE))
    assert ifs == endifs
    assert text.count("\nchoice ") == text.count("\nendchoice")


def _cmake_sources(cmake: Path) -> list[str]:
    """Paths named by zephyr_library_sources[_ifdef](...) calls."""
    text = re.sub(r"#[^\n]*", "", cmake.read_text())
    out = []
    for m in re.finditer(r"zephyr_library_sources(_ifdef)?\s*\(([^)]*)\)", text):
        words = m.group(2).split()
        out += words[1:] if m.group(1) else words
    return out


def test_every_cmake_source_exists() -> None:
    sources = _cmake_sources(MODULE / "CMakeLists.txt")
    assert "src/core/kernels.c" in sources and "src/zephyr/link_sim.c" in sources
    missing = [s for s in sources if not (MODULE / s).is_file()]
    assert not missing, f"listed in cats_zephyr_module/CMakeLists.txt but absent: {missing}"
    # every portable core source is built by Zephyr too
    core = {f"src/core/{p.name}" for p in (MODULE / "src" / "core").glob("*.c")}
    assert core <= set(sources), core - set(sources)
    # the proto zephyr_nanopb_sources() compiles is the repository's
    text = (MODULE / "CMakeLists.txt").read_text()
    # (relative to the CMakeLists itself: the module directory Zephyr reports differs between
    # the repository root's zephyr/module.yml and cats_zephyr_module/zephyr/module.yml)
    m = re.search(r"zephyr_nanopb_sources\(\S+\s+\$\{CMAKE_CURRENT_LIST_DIR\}/(\S+)\)", text)
    assert m and (MODULE / m.group(1)).resolve() == (ROOT / "proto" / "cats.proto").resolve()
    assert (ROOT / "proto" / "cats.options").is_file()  # picked up beside the .proto


def test_sample_and_suites_are_complete() -> None:
    for app in (SAMPLE, GATEWAY):
        for rel in ("CMakeLists.txt", "prj.conf", "sample.yaml", "src/main.c"):
            assert (app / rel).is_file(), app / rel
        text = (app / "CMakeLists.txt").read_text()
        # the module and the link fragment come in before Zephyr is configured
        assert text.index("cats_link.cmake") < text.index("find_package(Zephyr")
        assert "ZEPHYR_EXTRA_MODULES" in text
    assert (SAMPLE / "README.rst").is_file()
    for link in ("ieee802154", "ble", "sim"):
        conf = (MODULE / "conf" / f"link_{link}.conf").read_text()
        assert f"CONFIG_CATS_LINK_{link.upper()}=y" in conf
    sample = yaml.safe_load((SAMPLE / "sample.yaml").read_text())
    assert sample["sample"]["name"] and sample["tests"]
    suite = yaml.safe_load((KERNEL_SUITE / "testcase.yaml").read_text())
    assert "native_sim" in suite["tests"]["cats.kernels"]["platform_allow"]
    assert "ZEPHYR_EXTRA_MODULES" in (KERNEL_SUITE / "CMakeLists.txt").read_text()
    # the sim link's UART is the chosen node the sim link's overlay defines
    link_sim = (MODULE / "src" / "zephyr" / "link_sim.c").read_text()
    chosen = re.search(r"DT_CHOSEN\((\w+)\)", link_sim).group(1)
    overlay = (MODULE / "conf" / "link_sim.overlay").read_text()
    assert f"{chosen.replace('_', ',', 1).replace('_', '-')} = &uart1" in overlay


def test_link_fragment_follows_the_board(tmp_path) -> None:
    """cmake/cats_link.cmake: sim on every native_sim variant (Zephyr looks up board files by
    the full target, so native_sim/native/64 would miss boards/native_sim.*), ieee802154 on
    radio boards, ble with FILE_SUFFIX=ble or CATS_LINK=ble."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("no cmake")
    cases = [("native_sim", "", "sim"), ("native_sim/native/64", "", "sim"),
             ("nrf52840dk/nrf52840", "", "ieee802154"), ("nrf52_bsim", "", "ieee802154"),
             ("nrf52840dk/nrf52840", "-DFILE_SUFFIX=ble", "ble")]  # fmt: skip
    for board, extra, want in cases:
        script = (
            f"set(BOARD {board})\n"
            + (f"set(FILE_SUFFIX {extra.split('=')[1]})\n" if extra else "")
            + f"include({MODULE / 'cmake' / 'cats_link.cmake'})\n"
            + 'message(STATUS "RESULT ${CATS_LINK} ${EXTRA_CONF_FILE} ${EXTRA_DTC_OVERLAY_FILE}")\n'
        )
        (tmp_path / "probe.cmake").write_text(script)
        proc = subprocess.run([cmake, "-P", str(tmp_path / "probe.cmake")], text=True,
                              capture_output=True)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        line = next(ln for ln in proc.stdout.splitlines() if "RESULT" in ln)
        assert line.split()[2] == want, (board, line)
        assert f"link_{want}.conf" in line
        assert ("link_sim.overlay" in line) == (want == "sim")


def test_link_mtus_match_the_resource_model() -> None:
    """The radio links' sizes are cats.wire.phy's (the one Python definition): the MAC payload /
    AdvData carries the AirType byte + the ColumnFrame, on the air and in the C links."""
    from cats.artefacts import frames
    from cats.wire import phy

    assert phy.AIR_TYPE_BYTES == 1
    assert frames.MTU_IEEE802154 == phy.IEEE802154.column_mtu == 115
    assert frames.MTU_BLE2M == phy.BLE2M.column_mtu == 240
    link = (MODULE / "src" / "zephyr" / "link_ieee802154.c").read_text()
    payload = f"{phy.IEEE802154_PSDU_MAX} - {phy.IEEE802154_MHR} - {phy.IEEE802154_FCS}"
    assert f"#define CATS_802154_PAYLOAD ({payload})" in link
    assert "#define CATS_802154_MTU (CATS_802154_PAYLOAD - 1)" in link
    assert "tx_buf[0] = CATS_AIR_COLUMN;" in link and "buf[0] != CATS_AIR_COLUMN" in link
    ble = (MODULE / "src" / "zephyr" / "link_ble.c").read_text()
    payload = f"{phy.BLE_PDU_PAYLOAD_MAX} - {phy.BLE_EXT_HEADER} - {phy.BLE_AD_HEADER}"
    assert f"#define CATS_BLE_PAYLOAD ({payload})" in ble
    assert "#define CATS_BLE_MTU (CATS_BLE_PAYLOAD - 1)" in ble
    assert "adv_buf[2] = CATS_AIR_COLUMN;" in ble and "rx_tmp.data[0] != CATS_AIR_COLUMN" in ble
    kconfig = (MODULE / "Kconfig").read_text()
    # the simulated radio frame is the AirType byte + the ColumnFrame: 116 - 1 on 802.15.4
    assert re.search(r"config CATS_SIM_MTU.*?default 115", kconfig, re.DOTALL)
    conf = (MODULE / "conf" / "link_sim.conf").read_text()
    assert "CONFIG_CATS_SIM_MTU=115" in conf
    m4 = (MODULE / "m4" / "node_main.c").read_text()
    assert ".mtu = 115," in m4


def test_sim_link_crc_is_ccitt_false(tmp_path) -> None:
    """The stream's CRC (src/core/stream.c, which link_sim.c uses rather than a framing of its
    own) is binascii.crc_hqx(data, 0xFFFF); run its C loop against that."""
    import binascii

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no host C compiler")
    link_sim = (MODULE / "src" / "zephyr" / "link_sim.c").read_text()
    assert "cats_stream_decode(" in link_sim and "cats_stream_header(" in link_sim
    assert "0xCA" not in link_sim and "crc16(0xFFFF" not in link_sim
    src = (MODULE / "src" / "core" / "stream.c").read_text()
    body = re.search(r"uint16_t cats_stream_crc16\(.*?\n}\n", src, re.DOTALL).group(0)
    prog = tmp_path / "crc.c"
    prog.write_text(
        "#include <stdint.h>\n#include <stddef.h>\n#include <stdio.h>\n"
        + body
        + 'int main(void) { const uint8_t m[] = "123456789\\xca\\x75\\x00";\n'
        '  printf("%u\\n", cats_stream_crc16(0xFFFF, m, 12)); return 0; }\n'
    )
    subprocess.run([cc, "-std=c99", str(prog), "-o", str(tmp_path / "crc")], check=True)
    out = subprocess.run([str(tmp_path / "crc")], capture_output=True, text=True, check=True)
    assert int(out.stdout) == binascii.crc_hqx(b"123456789\xca\x75\x00", 0xFFFF)


# ----------------------------------------------------------------------------------------------
# The ztest suite on the host (shim)
# ----------------------------------------------------------------------------------------------


def _load_gen_vectors():
    spec = importlib.util.spec_from_file_location("gen_vectors", KERNEL_SUITE / "gen_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_kernel_vectors_are_current() -> None:
    """vectors.h is exactly what qref produces now (regenerate with gen_vectors.py)."""
    gen = _load_gen_vectors()
    assert (KERNEL_SUITE / "src" / "vectors.h").read_text() == gen.generate()


@pytest.mark.bitexact
@pytest.mark.parametrize("dsp", [False, True], ids=["plain", "dsp-emulated"])
def test_kernel_ztest_suite_on_host(tmp_path, dsp: bool) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no host C compiler")
    exe = tmp_path / "ztest_kernels"
    cmd = [cc, "-std=gnu99", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{SHIM}",
           f"-I{MODULE / 'include'}", str(KERNEL_SUITE / "src" / "main.c"),
           str(MODULE / "src" / "core" / "kernels.c"), "-o", str(exe)]  # fmt: skip
    if dsp:
        cmd.insert(1, "-DCATS_DSP_EMULATE")
    subprocess.run(cmd, check=True, capture_output=True)
    proc = subprocess.run([str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    assert "0 failed" in proc.stdout
    assert proc.stdout.count("PASS") >= (7 if dsp else 6)


# ----------------------------------------------------------------------------------------------
# Real Zephyr builds (only with a Zephyr tree)
# ----------------------------------------------------------------------------------------------

ZEPHYR_BASE = os.environ.get("ZEPHYR_BASE")
WEST = shutil.which("west")
needs_zephyr = pytest.mark.skipif(
    not (ZEPHYR_BASE and Path(ZEPHYR_BASE, "CMakeLists.txt").is_file() and WEST),
    reason="no Zephyr tree: set ZEPHYR_BASE to a Zephyr 4.x checkout (west.yml pins v4.3.0) "
    "with its SDK and `west` on PATH to build the module for native_sim",
)


@needs_zephyr
def test_west_build_kernel_suite_native_sim(tmp_path) -> None:
    build = tmp_path / "ztest"
    subprocess.run(
        [WEST, "build", "-p", "always", "-b", "native_sim", "-d", str(build), str(KERNEL_SUITE)],
        check=True, cwd=ROOT,
    )  # fmt: skip
    proc = subprocess.run(
        [str(build / "zephyr" / "zephyr.exe")], capture_output=True, text=True, timeout=120
    )
    assert "PROJECT EXECUTION SUCCESSFUL" in proc.stdout, proc.stdout[-2000:]


@needs_zephyr
def test_west_build_node_sample_native_sim(tmp_path) -> None:
    from cats.artefacts.export import export_partition, untrained
    from cats.model.partition import Partition

    _, qm = untrained("test", 0)
    part = tmp_path / "part"
    export_partition(qm, Partition.full(qm.cfg, 4), part)
    build = tmp_path / "node"
    subprocess.run(
        [WEST, "build", "-p", "always", "-b", "native_sim", "-d", str(build), str(SAMPLE), "--",
         f"-DCATS_PARTITION_DIR={part}", "-DCATS_NODE_ID=2"],
        check=True, cwd=ROOT,
    )  # fmt: skip
    assert (build / "zephyr" / "zephyr.exe").is_file()
    config = (build / "zephyr" / ".config").read_text()
    assert "CONFIG_CATS_NODE_ID=2" in config and "CONFIG_CATS_LINK_SIM=y" in config
