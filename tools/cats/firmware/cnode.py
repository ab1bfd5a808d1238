"""ctypes bindings of the C node core (cats_zephyr_module, host build `build/host`).

``CNode`` wraps one ``struct cats_node`` with the same exchange protocol as ``qref.Node``
(begin / outgoing / put / compute / output); ``run_swarm`` wires D of them like
``qref.run_swarm``. The shared library is (re)built with CMake when it is missing or older
than any of its sources, so tests always run the C code in the working tree.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cats.base.paths import REPO_ROOT

MODULE_DIR = REPO_ROOT / "cats_zephyr_module"
HOST_SOURCE_DIR = MODULE_DIR / "host"
BUILD_DIR = REPO_ROOT / "build" / "host"
ASAN_BUILD_DIR = REPO_ROOT / "build" / "host-asan"
LIB_NAME = "libcats_host.so"
_SOURCE_ROOTS = (
    MODULE_DIR / "include",
    MODULE_DIR / "src" / "core",
    MODULE_DIR / "src" / "port" / "host",
    HOST_SOURCE_DIR,
    REPO_ROOT / "proto",
)

# enum cats_status (cats_node.h)
OK = 0
ERR_ARG = -1
ERR_MANIFEST = -2
ERR_BLOB = -3
ERR_ARENA = -4
ERR_UNSUPPORTED = -5
ERR_COLUMN = -6
ERR_STATE = -7
ERR_VERSION = -8
ERR_HASH = -9
ERR_TENSOR = -10

# enum cats_kind / cats_space (cats_node.h); the last three of each are the paper blocks'.
KINDS = ("attn_in", "attn_out", "ffn_in", "ffn_hidden", "head_in", "in_x", "in_hidden",
         "head_hidden")  # fmt: skip
SPACES = {1: "model", 2: "hidden", 3: "output", 4: "input", 5: "in_hidden", 6: "head_hidden"}
SPACE_IDS = {v: k for k, v in SPACES.items()}


class CNodeError(RuntimeError):
    """A C call returned a negative cats_status."""

    def __init__(self, code: int, what: str, needed: int | None = None) -> None:
        self.code = code
        self.needed = needed
        msg = f"{what}: {strerror(code)} ({code})"
        if needed is not None:
            msg += f", arena needs {needed} bytes"
        super().__init__(msg)


# ------------------------------------------------------------------------------------------------
# Building and loading the library
# ------------------------------------------------------------------------------------------------


def _newest_source_mtime() -> float:
    return max(p.stat().st_mtime for root in _SOURCE_ROOTS for p in root.rglob("*") if p.is_file())


def build_host(build_dir: Path = BUILD_DIR, sanitize: bool = False, force: bool = False) -> Path:
    """Configure and build the host C core into `build_dir` if anything is newer than its
    library; returns build_dir. Serialised with a lock file (parallel test processes)."""
    build_dir = Path(build_dir)
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    lib = build_dir / LIB_NAME
    with open(build_dir.parent / f".{build_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and lib.is_file() and lib.stat().st_mtime >= _newest_source_mtime():
            return build_dir
        configure = ["cmake", "-S", str(HOST_SOURCE_DIR), "-B", str(build_dir),
                     f"-DCATS_SANITIZE={'ON' if sanitize else 'OFF'}"]  # fmt: skip
        for cmd in (configure, ["cmake", "--build", str(build_dir), "-j2"]):
            res = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(
                    f"host build failed: {' '.join(cmd)}\n{res.stdout[-4000:]}{res.stderr[-4000:]}"
                )
        lib.touch()  # up to date even if make had nothing to relink
    return build_dir


class _Exchange(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_uint8),
        ("space", ctypes.c_uint8),
        ("block", ctypes.c_int8),
        ("rows", ctypes.c_uint16),
        ("n_kept", ctypes.c_uint16),
        ("n_held", ctypes.c_uint16),
        ("own_start", ctypes.c_uint16),
        ("own_end", ctypes.c_uint16),
        ("own_slot", ctypes.c_uint16),
        ("kept", ctypes.POINTER(ctypes.c_uint16)),
        ("held", ctypes.POINTER(ctypes.c_uint16)),
    ]


class _Shape(ctypes.Structure):
    _fields_ = [
        ("task", ctypes.c_uint8),
        ("activation", ctypes.c_uint8),
        ("features", ctypes.c_uint16),
        ("heads", ctypes.c_uint16),
        ("blocks", ctypes.c_uint16),
        ("ffn", ctypes.c_uint16),
        ("head_dim", ctypes.c_uint16),
        ("tokens", ctypes.c_uint16),
        ("patch", ctypes.c_uint16),  # input values per token (2 x patch with paper blocks)
        ("outputs", ctypes.c_uint16),
        ("io_hidden", ctypes.c_uint16),
        ("io", ctypes.c_uint8),
    ]


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, u8p, i8p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.POINTER(ctypes.c_int8)
    u16, u16p, sz = ctypes.c_uint16, ctypes.POINTER(ctypes.c_uint16), ctypes.c_size_t
    i32, i32p, i64p = ctypes.c_int32, ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int64)
    sigs: dict[str, tuple] = {
        "cats_strerror": (ctypes.c_char_p, [ctypes.c_int]),
        "cats_node_arena_needed": (sz, [u8p, sz]),
        "cats_node_init": (
            ctypes.c_int, [ctypes.POINTER(p), u8p, sz, u8p, sz, u8p, sz, ctypes.POINTER(sz)]
        ),
        "cats_node_id": (u16, [p]),
        "cats_node_count": (u16, [p]),
        "cats_node_exchanges": (u16, [p]),
        "cats_node_shape": (ctypes.POINTER(_Shape), [p]),
        "cats_node_partition_hash": (u8p, [p]),
        "cats_node_exchange": (ctypes.POINTER(_Exchange), [p, u16]),
        "cats_node_owner": (ctypes.c_int, [p, ctypes.c_uint8, u16]),
        "cats_node_begin": (ctypes.c_int, [p, ctypes.c_uint32, i8p, sz]),
        "cats_node_inference": (ctypes.c_uint32, [p]),
        "cats_node_current_exchange": (ctypes.c_int, [p]),
        "cats_node_outgoing": (ctypes.c_int, [p, u16, u16, u16, i8p]),
        "cats_node_put": (ctypes.c_int, [p, u16, u16, u16, u16, u16, i8p]),
        "cats_node_has": (ctypes.c_int, [p, u16]),
        "cats_node_compute": (ctypes.c_int, [p, u16p]),
        "cats_node_output": (i8p, [p, u16p, u16p]),
        # kernels (cats_kernels.h), for the unit tests
        "cats_isqrt64": (ctypes.c_uint32, [ctypes.c_uint64]),
        "cats_matmul_s8": (None, [i8p, ctypes.c_int, ctypes.c_int, i8p, ctypes.c_int, i32p,
                                  i32p, i32p, i8p, p]),
        "cats_matmul_s8_scratch_bytes": (sz, [ctypes.c_int, ctypes.c_int]),
        "cats_matmul_s8_c": (None, [i8p, ctypes.c_int, ctypes.c_int, i8p, ctypes.c_int, i32p,
                                    i32p, i32p, i8p]),
        "cats_matmul_s8_dsp": (None, [i8p, ctypes.c_int, ctypes.c_int, i8p, ctypes.c_int,
                                      i32p, i32p, i32p, i8p, p]),
        "cats_layer_norm_s8": (None, [i8p, ctypes.c_int, ctypes.c_int, u8p, i32p, i32p, i32p,
                                      i32, i8p]),
        "cats_softmax_s8": (None, [i64p, u8p, ctypes.c_int, i8p]),
        "cats_attention_s8": (None, [i8p, i8p, i8p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                     ctypes.c_int, i32, i32, i32, i32, i64p, i8p]),
        "cats_add_s8": (None, [i8p, i32, i8p, i32, i32, ctypes.c_int, i8p]),
        "cats_lut_s8": (None, [i8p, i8p, ctypes.c_int, i8p]),
        "cats_pool_s8": (None, [i8p, ctypes.c_int, ctypes.c_int, i32, i32, i8p]),
        "cats_sha256": (None, [u8p, sz, u8p]),
    }  # fmt: skip
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    return lib


@functools.cache
def lib() -> ctypes.CDLL:
    """The host library, built first if missing or stale."""
    return _declare(ctypes.CDLL(str(build_host() / LIB_NAME)))


def strerror(code: int) -> str:
    return lib().cats_strerror(code).decode()


def ptr(a: np.ndarray, ctype: type = ctypes.c_int8) -> ctypes._Pointer:
    """C pointer to a contiguous numpy array (the array must outlive the call)."""
    assert a.flags["C_CONTIGUOUS"]
    return a.ctypes.data_as(ctypes.POINTER(ctype))


def _buffer(data: bytes) -> ctypes.Array:
    """A malloc'd copy (16-byte aligned, unlike a bytes object's payload)."""
    buf = (ctypes.c_uint8 * max(1, len(data)))()
    ctypes.memmove(buf, data, len(data))
    return buf


def arena_needed(manifest: bytes) -> int:
    """cats_node_arena_needed: arena bytes of this node's static memory plan (0: bad manifest)."""
    buf = _buffer(manifest)
    return int(lib().cats_node_arena_needed(buf, len(manifest)))


# ------------------------------------------------------------------------------------------------
# One node
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """struct cats_exchange, copied out."""

    index: int
    kind: str
    space: str
    block: int
    rows: int
    kept: np.ndarray
    held: np.ndarray
    own: tuple[int, int]


class CNode:
    """One C node over its manifest and blob (kept alive here: weights are read in place)."""

    def __init__(self, manifest: bytes, blob: bytes, arena_size: int | None = None) -> None:
        self._lib = lib()
        self._manifest = _buffer(manifest)
        self._blob = _buffer(blob)
        self.arena_needed = int(self._lib.cats_node_arena_needed(self._manifest, len(manifest)))
        size = self.arena_needed if arena_size is None else arena_size
        self._arena = (ctypes.c_uint8 * max(1, size))()
        handle, needed = ctypes.c_void_p(), ctypes.c_size_t(0)
        rc = self._lib.cats_node_init(ctypes.byref(handle), self._manifest, len(manifest),
                                      self._blob, len(blob), self._arena, size,
                                      ctypes.byref(needed))  # fmt: skip
        if rc != OK:
            raise CNodeError(rc, "cats_node_init", int(needed.value) if rc == ERR_ARENA else None)
        self._n = handle
        self.id = int(self._lib.cats_node_id(handle))
        self.nodes = int(self._lib.cats_node_count(handle))
        self.n_exchanges = int(self._lib.cats_node_exchanges(handle))
        sh = self._lib.cats_node_shape(handle).contents
        self.shape = {name: int(getattr(sh, name)) for name, _ in _Shape._fields_}
        self.partition_hash = bytes(self._lib.cats_node_partition_hash(handle)[:32])
        self.exchanges = tuple(self._exchange(e) for e in range(self.n_exchanges))

    @classmethod
    def from_dir(cls, node_dir: Path, arena_size: int | None = None) -> CNode:
        node_dir = Path(node_dir)
        return cls((node_dir / "manifest.pb").read_bytes(), (node_dir / "weights.bin").read_bytes(),
                   arena_size)  # fmt: skip

    def _exchange(self, e: int) -> Exchange:
        x = self._lib.cats_node_exchange(self._n, e).contents
        kept = np.ctypeslib.as_array(x.kept, (x.n_kept,)).astype(np.int64) if x.n_kept else None
        held = np.ctypeslib.as_array(x.held, (x.n_held,)).astype(np.int64) if x.n_held else None
        return Exchange(e, KINDS[x.kind], SPACES[x.space], int(x.block), int(x.rows),
                        kept if kept is not None else np.zeros(0, np.int64),
                        held if held is not None else np.zeros(0, np.int64),
                        (int(x.own_start), int(x.own_end)))  # fmt: skip

    @property
    def current_exchange(self) -> int:
        return int(self._lib.cats_node_current_exchange(self._n))

    @property
    def inference(self) -> int:
        return int(self._lib.cats_node_inference(self._n))

    def owner(self, space: str, col: int) -> int:
        return int(self._lib.cats_node_owner(self._n, SPACE_IDS[space], col))

    def _check(self, rc: int, what: str) -> None:
        if rc != OK:
            raise CNodeError(rc, what)

    def begin(self, inference_id: int, inp: np.ndarray) -> None:
        """Start an inference on the broadcast int8 input (tokens, patch)."""
        inp = np.ascontiguousarray(inp, dtype=np.int8)
        self._check(self._lib.cats_node_begin(self._n, inference_id, ptr(inp), inp.size),
                    "cats_node_begin")  # fmt: skip

    def outgoing(self) -> tuple[np.ndarray, np.ndarray]:
        """(kept column ids, int8 values (rows, k)) this node broadcasts in the current exchange."""
        ex = self.exchanges[self.current_exchange]
        vals = np.zeros((ex.kept.size, ex.rows), dtype=np.int8)
        for k in range(ex.kept.size):
            self._check(self._lib.cats_node_outgoing(self._n, k, 0, ex.rows, ptr(vals[k])),
                        "cats_node_outgoing")  # fmt: skip
        return ex.kept.copy(), np.ascontiguousarray(vals.T)

    def put(self, sender: int, col: int, row0: int, values: np.ndarray,
            exchange: int | None = None) -> int:  # fmt: skip
        """Store rows row0.. of column `col` from `sender`; returns the cats_status (0: stored).
        `exchange` defaults to the current one."""
        vals = np.ascontiguousarray(values, dtype=np.int8).reshape(-1)
        e = self.current_exchange if exchange is None else exchange
        return int(self._lib.cats_node_put(self._n, e & 0xFFFF, sender, col, row0, vals.size,
                                           ptr(vals)))  # fmt: skip

    def has(self, col: int) -> bool:
        return bool(self._lib.cats_node_has(self._n, col))

    def compute(self) -> int:
        """Close the current exchange; returns how many held columns were lost."""
        lost = ctypes.c_uint16(0)
        self._check(self._lib.cats_node_compute(self._n, ctypes.byref(lost)), "cats_node_compute")
        return int(lost.value)

    def output_range(self) -> tuple[int, int]:
        start, count = ctypes.c_uint16(), ctypes.c_uint16()
        if not self._lib.cats_node_output(self._n, ctypes.byref(start), ctypes.byref(count)):
            raise CNodeError(ERR_STATE, "cats_node_output")
        return int(start.value), int(start.value) + int(count.value)

    def output(self) -> np.ndarray:
        """The node's own int8 output slice (after the last exchange)."""
        start, count = ctypes.c_uint16(), ctypes.c_uint16()
        y = self._lib.cats_node_output(self._n, ctypes.byref(start), ctypes.byref(count))
        if not y:
            raise CNodeError(ERR_STATE, "cats_node_output")
        return (
            np.ctypeslib.as_array(y, (count.value,)).copy() if count.value else np.zeros(0, np.int8)
        )


def load_swarm(directory: Path, arena_size: int | None = None) -> list[CNode]:
    """CNodes for every node-<d> directory of an export, in node order."""
    dirs = sorted(Path(directory).glob("node-*"), key=lambda p: int(p.name.split("-")[1]))
    return [CNode.from_dir(d, arena_size) for d in dirs]


def deliver(cnodes: list[CNode], frames: list[tuple[np.ndarray, np.ndarray]],
            dm: np.ndarray | None, frag_rows: int | None = None) -> None:  # fmt: skip
    """Put every sender's frame (cols, values rows x k) into every receiver that hears it
    (dm[s, r]); columns taller than frag_rows go in row fragments."""
    for r, node in enumerate(cnodes):
        for s, (cols, vals) in enumerate(frames):
            if s == r or (dm is not None and not dm[s, r]):
                continue
            rows = vals.shape[0]
            step = frag_rows or rows
            for k, col in enumerate(cols):
                for row0 in range(0, rows, step):
                    rc = node.put(s, int(col), row0, vals[row0 : row0 + step, k])
                    if rc != OK:
                        raise CNodeError(rc, f"cats_node_put({s} -> {r}, col {col})")


def run_swarm(cnodes: list[CNode], inp: np.ndarray, delivery: dict[int, np.ndarray] | None = None,
              inference_id: int = 0, frag_rows: int | None = None) -> np.ndarray:  # fmt: skip
    """One inference through the C nodes, like qref.run_swarm: delivery[e][s, r] False loses
    s's frame at r. Returns the int8 output assembled from the nodes' own output slices."""
    delivery = delivery or {}
    for node in cnodes:
        node.begin(inference_id, inp)
    for e in range(cnodes[0].n_exchanges):
        frames = [node.outgoing() for node in cnodes]
        deliver(cnodes, frames, delivery.get(e), frag_rows)
        for node in cnodes:
            node.compute()
    return np.concatenate([node.output() for node in cnodes])
