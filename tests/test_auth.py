"""Authenticated radio frames: AES-CCM* test vectors through the C port (mbed TLS, host build)
and Python (cryptography), C <-> Python golden frames, and the receiving checks (wrong key,
tampering, rewritten and wrapped inference ids, replay, sender binding)."""

from __future__ import annotations

import ctypes

import pytest

from cats.firmware import cnode
from cats.wire import auth
from cats.wire.proto import pb

# RFC 3610 packet vector #1 (8-byte MIC) and NIST SP 800-38C example 1 (4-byte MIC, 7-byte nonce)
VECTORS = [
    (
        bytes(range(0xC0, 0xD0)),
        bytes.fromhex("00000003020100a0a1a2a3a4a5"),
        bytes(range(8)),
        bytes(range(8, 0x1F)),
        8,
        bytes.fromhex("588c979a61c663d2f066d0c2c0f989806d5f6b61dac38417e8d12cfdf926e0"),
    ),
    (
        bytes(range(0x40, 0x50)),
        bytes(range(0x10, 0x17)),
        bytes(range(8)),
        bytes(range(0x20, 0x24)),
        4,
        bytes.fromhex("7162015b4dac255d"),
    ),
]

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
TAG = 0x1A2B3C4D
NODES = 4


class CAuth(ctypes.Structure):
    _fields_ = [
        ("tag", ctypes.c_uint32),
        ("self", ctypes.c_uint16),
        ("nodes", ctypes.c_uint16),
        ("mic_len", ctypes.c_uint8),
        ("seen", ctypes.c_uint8 * 65),
        ("newest", ctypes.c_uint32 * 65),
        ("position", ctypes.c_uint64 * 65),
        ("accepted", ctypes.c_uint32),
        ("rejected_malformed", ctypes.c_uint32),
        ("rejected_sender", ctypes.c_uint32),
        ("rejected_mic", ctypes.c_uint32),
        ("rejected_replay", ctypes.c_uint32),
        ("ccm", ctypes.c_uint64 * (2 * 32)),  # struct cats_ccm ccm[2] (CATS_CCM_CTX_WORDS)
    ]


@pytest.fixture(scope="module")
def lib():
    lib = cnode.lib()
    p, u8p, sz = ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t
    u32 = ctypes.c_uint32
    u8, u16, i = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_int
    sigs = {
        "cats_auth_init": (i, [p, u8p, u8, u32, u16, u16]),
        "cats_auth_seal": (i, [p, u8, u32, u8p, sz, sz]),
        "cats_auth_open": (i, [p, u8, u16, u32, u8p, sz, ctypes.POINTER(u32)]),
        "cats_auth_expand_id": (u32, [u16, u32]),
        "cats_ccm_encrypt": (i, [u8p, u8p, sz, u8p, sz, u8p, u8p, sz, u8p, sz]),
        "cats_ccm_decrypt": (i, [u8p, u8p, sz, u8p, sz, u8p, u8p, sz, u8p, sz]),
    }
    for name, (res, args) in sigs.items():
        getattr(lib, name).restype = res
        getattr(lib, name).argtypes = args
    return lib


def c_auth(lib, self_id: int, key: bytes = KEY, mic: int = 8, tag: int = TAG) -> CAuth:
    a = CAuth()
    kb = (ctypes.c_uint8 * 16).from_buffer_copy(key)
    assert lib.cats_auth_init(ctypes.byref(a), kb, mic, ctypes.c_uint32(tag), self_id, NODES) == 0
    return a


def c_seal(lib, a: CAuth, air_type: int, inference: int, msg: bytes) -> bytes:
    buf = (ctypes.c_uint8 * 300).from_buffer_copy(msg + bytes(300 - len(msg)))
    n = lib.cats_auth_seal(
        ctypes.byref(a), air_type, ctypes.c_uint32(inference), buf, len(msg), 300
    )
    assert n == len(msg) + a.mic_len, n
    return bytes(buf[:n])


def c_open(lib, a: CAuth, air_type: int, src: int, ref: int, data: bytes) -> tuple[int, int]:
    buf = (ctypes.c_uint8 * max(1, len(data))).from_buffer_copy(data or b"\0")
    inf = ctypes.c_uint32(0)
    rc = lib.cats_auth_open(
        ctypes.byref(a), air_type, src, ctypes.c_uint32(ref), buf, len(data), ctypes.byref(inf)
    )
    return rc, inf.value


C_REASONS = {-1: "malformed", -2: "sender", -3: "mic", -4: "replay"}


@pytest.mark.parametrize("vec", VECTORS, ids=["rfc3610-1", "sp800-38c-ex1"])
def test_ccm_vectors(lib, vec):
    key, nonce, aad, plain, mic, expect = vec
    # Python (cryptography)
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    assert AESCCM(key, tag_length=mic).encrypt(nonce, plain, aad) == expect
    # C port (mbed TLS CCM*)
    u8 = ctypes.c_uint8
    out = (u8 * len(plain))()
    tag = (u8 * mic)()
    args = (
        (u8 * 16).from_buffer_copy(key),
        (u8 * len(nonce)).from_buffer_copy(nonce),
        len(nonce),
        (u8 * len(aad)).from_buffer_copy(aad),
        len(aad),
        (u8 * len(plain)).from_buffer_copy(plain),
        out,
        len(plain),
    )
    assert lib.cats_ccm_encrypt(*args, tag, mic) == 0
    assert bytes(out) + bytes(tag) == expect
    back = (u8 * len(plain))()
    ct = (u8 * len(plain)).from_buffer_copy(expect[: len(plain)])
    ok = lib.cats_ccm_decrypt(*args[:5], ct, back, len(plain), tag, mic)
    assert ok == 0 and bytes(back) == plain
    tag[0] ^= 1
    assert lib.cats_ccm_decrypt(*args[:5], ct, back, len(plain), tag, mic) != 0


def column_msg(inference: int, exchange: int, fragment: int) -> bytes:
    return (
        pb()
        .ColumnFrame(
            inference_id=inference & 0xFFFF,
            exchange=exchange,
            fragment=fragment,
            payload=bytes(range(64)),
        )
        .SerializeToString()
    )


def input_msg(inference: int, fragment: int) -> bytes:
    return (
        pb()
        .InputFrame(inference_id=inference, fragment=fragment, fragments=4, payload=b"\x01\x02")
        .SerializeToString()
    )


def output_msg(inference: int, sender: int, offset: int, status: int = 0) -> bytes:
    return (
        pb()
        .OutputFrame(
            inference_id=inference, sender=sender, status=status, offset=offset, payload=b"\x64" * 8
        )
        .SerializeToString()
    )


MESSAGES = [
    ("column", auth.AIR_COLUMN, 1, 0x12345, lambda: column_msg(0x12345, 5, 2)),
    ("input", auth.AIR_INPUT, NODES, 77, lambda: input_msg(77, 3)),
    ("output", auth.AIR_OUTPUT, 2, 0x10001, lambda: output_msg(0x10001, 2, 40)),
]


@pytest.mark.parametrize("mic", [4, 8])
@pytest.mark.parametrize("name,air_type,src,inference,make", MESSAGES, ids=[m[0] for m in MESSAGES])
def test_golden_c_python(lib, mic, name, air_type, src, inference, make):
    """Python seals, C opens, and the other way round: the same bytes."""
    msg = make()
    py_tx = auth.Auth(KEY, TAG, src, NODES, mic)
    sealed = py_tx.seal(air_type, inference, msg)
    assert len(sealed) == len(msg) + mic
    assert c_seal(lib, c_auth(lib, src, mic=mic), air_type, inference, msg) == sealed
    rx = 0 if src != 0 else 3
    rc, inf = c_open(lib, c_auth(lib, rx, mic=mic), air_type, src, inference + 5, sealed)
    assert (rc, inf) == (len(msg), inference)
    got, inf = auth.Auth(KEY, TAG, rx, NODES, mic).open(air_type, src, inference + 5, sealed)
    assert (got, inf) == (msg, inference)
    # a fixed golden vector: the first ColumnFrame's MIC must never change silently
    if name == "column" and mic == 8:
        assert sealed[-8:].hex() == GOLDEN_COLUMN_MIC8


GOLDEN_COLUMN_MIC8 = "20f63c5ed604ed16"  # C and Python agree on it (ColumnFrame v2)


def both_reject(lib, air_type, src, ref, data, reason, rx=0, key=KEY, mic=8, tag=TAG):
    py = auth.Auth(key, tag, rx, NODES, mic)
    with pytest.raises(auth.AuthError) as err:
        py.open(air_type, src, ref, data)
    assert err.value.reason == reason
    assert getattr(py.stats, f"rejected_{reason}") == 1
    a = c_auth(lib, rx, key=key, mic=mic, tag=tag)
    rc, _ = c_open(lib, a, air_type, src, ref, data)
    assert C_REASONS.get(rc) == reason
    assert getattr(a, f"rejected_{reason}") == 1


def test_rejections(lib):
    inf = 0x12345
    msg = column_msg(inf, 5, 2)
    good = auth.Auth(KEY, TAG, 1, NODES).seal(auth.AIR_COLUMN, inf, msg)
    other_key = bytes(16)
    # wrong key, another partition, a flipped bit anywhere, a rewritten inference id
    both_reject(lib, auth.AIR_COLUMN, 1, inf, good, "mic", key=other_key)
    both_reject(lib, auth.AIR_COLUMN, 1, inf, good, "mic", tag=TAG ^ 1)
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x10
        py = auth.Auth(KEY, TAG, 0, NODES)
        with pytest.raises(auth.AuthError):
            py.open(auth.AIR_COLUMN, 1, inf, bytes(bad))
        assert c_open(lib, c_auth(lib, 0), auth.AIR_COLUMN, 1, inf, bytes(bad))[0] < 0
    rewritten = column_msg(inf + 1, 5, 2) + good[len(msg) :]
    both_reject(lib, auth.AIR_COLUMN, 1, inf + 1, rewritten, "mic")
    # the same frame 65,536 inferences later: the low 16 bits match, the MIC does not
    both_reject(lib, auth.AIR_COLUMN, 1, inf + 0x10000, good, "mic")
    # another link source (the nonce holds it); an InputFrame not from the gateway; our own id;
    # a link that cannot tell the source (a ColumnFrame names none)
    both_reject(lib, auth.AIR_COLUMN, 2, inf, good, "mic")
    both_reject(lib, auth.AIR_COLUMN, 1, inf, good, "sender", rx=1)
    both_reject(lib, auth.AIR_COLUMN, auth.SRC_CLAIMED, inf, good, "sender")
    both_reject(lib, auth.AIR_COLUMN, NODES, inf, good, "sender")
    inp = auth.Auth(KEY, TAG, NODES, NODES).seal(auth.AIR_INPUT, 9, input_msg(9, 0))
    both_reject(lib, auth.AIR_INPUT, 1, 0, inp, "sender")
    both_reject(lib, auth.AIR_COLUMN, NODES + 1, inf, good, "sender")
    # truncated, garbage
    both_reject(lib, auth.AIR_COLUMN, 1, inf, good[:5], "malformed")
    both_reject(lib, auth.AIR_COLUMN, 1, inf, b"\xff" * 20, "malformed")


def test_replay_window(lib):
    gw = auth.Auth(KEY, TAG, NODES, NODES)
    old = gw.seal(auth.AIR_INPUT, 100, input_msg(100, 0))
    new = gw.seal(auth.AIR_INPUT, 101, input_msg(101, 0))
    py = auth.Auth(KEY, TAG, 0, NODES)
    a = c_auth(lib, 0)
    for data in (old, new):
        assert py.open(auth.AIR_INPUT, NODES, 0, data)[0]
        assert c_open(lib, a, auth.AIR_INPUT, NODES, 0, data)[0] > 0
    with pytest.raises(auth.AuthError, match="replay"):
        py.open(auth.AIR_INPUT, NODES, 0, old)
    assert C_REASONS[c_open(lib, a, auth.AIR_INPUT, NODES, 0, old)[0]] == "replay"
    assert (py.stats.rejected_replay, a.rejected_replay) == (1, 1)
    # within the newest inference: later fragments pass, a repeat does not
    assert C_REASONS[c_open(lib, a, auth.AIR_INPUT, NODES, 0, new)[0]] == "replay"
    later = gw.seal(auth.AIR_INPUT, 101, input_msg(101, 1))
    assert py.open(auth.AIR_INPUT, NODES, 0, later)[1] == 101
    assert c_open(lib, a, auth.AIR_INPUT, NODES, 0, later) == (len(later) - 8, 101)
    # a node's OutputFrame comes after its ColumnFrames of the same inference
    node = auth.Auth(KEY, TAG, 2, NODES)
    col = node.seal(auth.AIR_COLUMN, 101, column_msg(101, 9, 5))
    out = node.seal(auth.AIR_OUTPUT, 101, output_msg(101, 2, 0))
    for data, kind in ((col, auth.AIR_COLUMN), (out, auth.AIR_OUTPUT)):
        assert c_open(lib, a, kind, 2, 101, data)[0] > 0
    assert C_REASONS[c_open(lib, a, auth.AIR_COLUMN, 2, 101, col)[0]] == "replay"


@pytest.mark.parametrize(
    "low,ref,want",
    [(5, 0x10005, 0x10005), (0xFFFF, 0x10002, 0xFFFF), (2, 0x1FFFE, 0x20002), (0x8000, 0, 0x8000)],
)
def test_expand_id(lib, low, ref, want):
    assert auth.expand_id(low, ref) == want
    assert lib.cats_auth_expand_id(ctypes.c_uint16(low), ctypes.c_uint32(ref)) == want


def test_key_files(tmp_path):
    p = tmp_path / "k"
    key = auth.new_key_file(p)
    assert auth.load_key(p) == key and (p.stat().st_mode & 0o777) == 0o600
    raw = tmp_path / "raw"
    raw.write_bytes(KEY)
    raw.chmod(0o600)
    assert auth.load_key(raw) == KEY
    raw.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        auth.load_key(raw)
    bad = tmp_path / "bad"
    bad.write_text("xyz\n")
    bad.chmod(0o600)
    with pytest.raises(ValueError, match="hex digits"):
        auth.load_key(bad)
    # the gateway's inference ids never restart under one key
    (a, a_end), (b, b_end) = auth.reserve_inference_ids(p), auth.reserve_inference_ids(p)
    assert 1 <= a < a_end <= b < b_end
