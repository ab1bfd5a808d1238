"""Authenticated radio frames: AES-128-CCM* with a per-swarm key (the Python mirror of
``cats_zephyr_module/src/core/auth.c``; the layout is defined in proto/cats.proto).

    air frame = AirType (1) | message (protobuf, cleartext) | MIC (4 or 8 bytes)
    nonce (13, big endian) = source station (2) | inference id (4) | AirType (1) |
                             exchange (2) | fragment (4)
    AAD = partition tag (4, little endian; never sent) | AirType (1) | message

The CCM* message is empty: frames are authenticated, not encrypted. Stations: node d is d,
the gateway is ``nodes``. A ColumnFrame carries the low 16 bits of the inference id; the
receiver takes the full id nearest its reference (its running inference) and the MIC covers
the full id. Receiving checks, in order: ``malformed``, ``sender``, ``mic``, ``replay``: a
sender sends in strictly increasing position (inference id, rank, exchange, fragment), rank 1
for OutputFrames, else 0; a frame at or before the newest authentic position of its sender is
a replay (an older inference, or an exact repeat).

Keys: 16 bytes, in a key file as 32 hex digits or 16 raw bytes, mode 0600 (``load_key``,
``new_key_file``). They never go into partition artefacts, logs, JSON or pcap traces.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESCCM

AIR_COLUMN, AIR_INPUT, AIR_OUTPUT = 1, 2, 3
KEY_LEN = 16
NONCE_LEN = 13
MIC_LENS = (4, 8)
MIC_DEFAULT = 8
MSG_MAX = 255
SRC_CLAIMED = 0xFFFE  # a link that cannot tell the sender: take the claimed one (cats_auth.h)

# (inference, exchange, sender, fragment) field numbers per AirType; 0 = not carried
# (ColumnFrame v2 names no sender: the link source is the sender)
_FIELDS = {AIR_COLUMN: (11, 12, 0, 13), AIR_INPUT: (1, 0, 0, 3), AIR_OUTPUT: (1, 0, 3, 6)}
_PAYLOAD = {AIR_COLUMN: 14, AIR_INPUT: 6, AIR_OUTPUT: 7}  # the payload bytes field

REASONS = ("malformed", "sender", "mic", "replay")


class AuthError(ValueError):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# ----------------------------------------------------------------------------------------------
# Keys
# ----------------------------------------------------------------------------------------------


def parse_key(data: bytes) -> bytes:
    """A key file's content: 32 hex digits (whitespace around them ignored) or 16 raw bytes."""
    text = data.strip()
    if len(text) == 2 * KEY_LEN:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(data) == KEY_LEN:
        return bytes(data)
    raise ValueError(f"a key is {KEY_LEN} raw bytes or {2 * KEY_LEN} hex digits")


def load_key(path: Path) -> bytes:
    path = Path(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{path}: key file must not be readable by others (chmod 600)")
    try:
        return parse_key(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def new_key_file(path: Path) -> bytes:
    """Write a fresh random key (hex) to `path` with mode 0600 (never overwrites)."""
    key = secrets.token_bytes(KEY_LEN)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key


def key_file(path: Path | None, default_dir: Path) -> Path:
    """The key file to use: `path`, or ``default_dir/swarm.key`` (created when missing)."""
    if path is not None:
        return Path(path)
    p = Path(default_dir) / "swarm.key"
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        new_key_file(p)
    return p


def reserve_inference_ids(key_path: Path, block: int = 1 << 20) -> tuple[int, int]:
    """The inference ids a (re)started gateway may use under this key, [first, end): a counter
    file next to the key (``<key>.counter``) reserves blocks of ids, so a restarted gateway
    never reuses a nonce. The gateway refuses requests once it reaches ``end``
    (``--inference-limit``, CATS_GW_ERR_IDS); a restart reserves the next block."""
    counter = Path(str(key_path) + ".counter")
    try:
        used = int(counter.read_text().strip() or "0")
    except FileNotFoundError:
        used = 0
    except ValueError as exc:
        raise ValueError(f"{counter}: not a number ({exc})") from None
    nxt = used + block
    if nxt >= 1 << 32:
        raise ValueError(f"{counter}: inference ids of this key are used up; use a new key")
    tmp = counter.with_suffix(".tmp")
    tmp.write_text(f"{nxt}\n")
    os.replace(tmp, counter)
    return max(1, used), nxt


# ----------------------------------------------------------------------------------------------
# Nonce, header, seal / open
# ----------------------------------------------------------------------------------------------


def nonce(src: int, inference: int, air_type: int, exchange: int, fragment: int) -> bytes:
    return (
        (src & 0xFFFF).to_bytes(2, "big")
        + (inference & 0xFFFFFFFF).to_bytes(4, "big")
        + bytes([air_type])
        + (exchange & 0xFFFF).to_bytes(2, "big")
        + (fragment & 0xFFFFFFFF).to_bytes(4, "big")
    )


def expand_id(low: int, ref: int) -> int:
    """The full 32-bit id nearest `ref` whose low 16 bits are `low`."""
    i = (ref & 0xFFFF0000) | (low & 0xFFFF)
    d = (i - ref) & 0xFFFFFFFF
    d = d - (1 << 32) if d >= 1 << 31 else d
    if d > 0x8000:
        i -= 0x10000
    elif d <= -0x8000:
        i += 0x10000
    return i & 0xFFFFFFFF


def _varint(b: bytes, pos: int) -> tuple[int, int]:
    v = 0
    for shift in range(0, 70, 7):
        if pos >= len(b):
            raise AuthError("malformed", "truncated varint")
        c = b[pos]
        pos += 1
        if shift < 64:
            v |= (c & 0x7F) << shift
        if not c & 0x80:
            return v & ((1 << 64) - 1), pos
    raise AuthError("malformed", "varint longer than 10 bytes")


@dataclass
class Header:
    inference: int = 0
    exchange: int = 0
    sender: int | None = None
    fragment: int = 0
    payload: bytes | None = None  # the payload field (the last one), None if absent


def header(air_type: int, msg: bytes) -> Header:
    """The nonce's header fields of a message (the C scanner's rules)."""
    if air_type not in _FIELDS:
        raise AuthError("malformed", f"AirType {air_type}")
    f = _FIELDS[air_type]
    vals = [0, 0, 0, 0]
    payload: bytes | None = None
    pos = 0
    while pos < len(msg):
        key, pos = _varint(msg, pos)
        num, wire = key >> 3, key & 7
        if num == 0 or num > 0x1FFFFFFF:
            raise AuthError("malformed", "bad field number")
        mine = f.index(num) if num in f else -1
        if (mine >= 0 and wire != 0) or (num == _PAYLOAD[air_type] and wire != 2):
            raise AuthError("malformed", "header field with the wrong wire type")
        if wire == 0:
            v, pos = _varint(msg, pos)
            if mine >= 0:
                if v > 0xFFFFFFFF:
                    raise AuthError("malformed", "header field beyond 32 bits")
                vals[mine] = v
        elif wire == 1:
            pos += 8
        elif wire == 2:
            n, pos = _varint(msg, pos)
            if n > len(msg) - pos:
                raise AuthError("malformed", "truncated field")
            if num == _PAYLOAD[air_type]:
                payload = bytes(msg[pos : pos + n])
            pos += n
        elif wire == 5:
            pos += 4
        else:
            raise AuthError("malformed", f"wire type {wire}")
        if pos > len(msg):
            raise AuthError("malformed", "truncated field")
    return Header(vals[0], vals[1], vals[2] if f[2] else None, vals[3], payload)


def _aad(tag: int, air_type: int, msg: bytes) -> bytes:
    return (tag & 0xFFFFFFFF).to_bytes(4, "little") + bytes([air_type]) + msg


@dataclass
class AuthStats:
    accepted: int = 0
    rejected_malformed: int = 0
    rejected_sender: int = 0
    rejected_mic: int = 0
    rejected_replay: int = 0


@dataclass
class Auth:
    """One station's sealing and checking state (mirror of struct cats_auth)."""

    key: bytes
    tag: int
    self_id: int
    nodes: int
    mic_len: int = MIC_DEFAULT
    newest: dict[int, tuple[int, int]] = field(default_factory=dict)  # (id, position)
    stats: AuthStats = field(default_factory=AuthStats)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_LEN:
            raise ValueError(f"key must be {KEY_LEN} bytes")
        if self.mic_len not in MIC_LENS:
            raise ValueError(f"MIC length must be 4 or 8, not {self.mic_len}")
        if not 0 <= self.self_id <= self.nodes:
            raise ValueError(f"station {self.self_id} not in 0..{self.nodes}")
        self._ccm = AESCCM(self.key, tag_length=self.mic_len)

    @property
    def gateway(self) -> int:
        return self.nodes

    def seal(self, air_type: int, inference: int, msg: bytes) -> bytes:
        """message + MIC (no AirType byte) of a frame we send in `inference` (full id)."""
        if len(msg) > MSG_MAX:
            raise ValueError(f"message of {len(msg)} bytes > {MSG_MAX}")
        h = header(air_type, msg)
        want = inference & 0xFFFF if air_type == AIR_COLUMN else inference & 0xFFFFFFFF
        if h.inference != want:
            raise ValueError(f"message carries inference {h.inference}, not {want}")
        n = nonce(self.self_id, inference, air_type, h.exchange, h.fragment)
        return msg + self._ccm.encrypt(n, b"", _aad(self.tag, air_type, msg))

    def seal_air(self, air_type: int, inference: int, msg: bytes) -> bytes:
        return bytes([air_type]) + self.seal(air_type, inference, msg)

    def open(self, air_type: int, src: int, ref: int, data: bytes) -> tuple[bytes, int]:
        """Check message + MIC from link source `src`; returns (message, full inference id) or
        raises AuthError (the reason is counted)."""
        try:
            return self._open(air_type, src, ref, data)
        except AuthError as err:
            name = f"rejected_{err.reason}"
            setattr(self.stats, name, getattr(self.stats, name) + 1)
            raise

    def open_air(self, src: int, ref: int, air: bytes) -> tuple[int, bytes, int]:
        if not air:
            self.stats.rejected_malformed += 1
            raise AuthError("malformed", "empty frame")
        msg, inf = self.open(air[0], src, ref, air[1:])
        return air[0], msg, inf

    def _open(self, air_type: int, src: int, ref: int, data: bytes) -> tuple[bytes, int]:
        if len(data) < self.mic_len or len(data) - self.mic_len > MSG_MAX:
            raise AuthError("malformed", f"{len(data)} bytes")
        msg, mic = data[: -self.mic_len], data[-self.mic_len :]
        h = header(air_type, msg)
        gw = self.gateway
        if src == SRC_CLAIMED:
            # a ColumnFrame names no sender: only a link that tells the source carries them
            if air_type == AIR_INPUT:
                src = gw
            elif air_type == AIR_COLUMN:
                src = gw + 1
            else:
                src = min(gw + 1, h.sender or 0)
        if src > gw or src == self.self_id:
            raise AuthError("sender", f"link source {src}")
        if air_type == AIR_INPUT and src != gw:
            raise AuthError("sender", f"InputFrame from station {src}")
        if air_type != AIR_INPUT and src == gw:
            raise AuthError("sender", f"{air_type} from the gateway station")
        if air_type == AIR_OUTPUT and h.sender != src:
            raise AuthError("sender", f"claims {h.sender}, link source {src}")
        if air_type == AIR_COLUMN and h.inference > 0xFFFF:
            raise AuthError("malformed", "ColumnFrame inference beyond 16 bits")
        inf = expand_id(h.inference, ref) if air_type == AIR_COLUMN else h.inference
        n = nonce(src, inf, air_type, h.exchange, h.fragment)
        try:
            self._ccm.decrypt(n, mic, _aad(self.tag, air_type, msg))
        except Exception:  # cryptography's InvalidTag
            raise AuthError("mic") from None
        pos = (air_type == AIR_OUTPUT) << 48 | (h.exchange & 0xFFFF) << 32 | h.fragment
        newest = self.newest.get(src)
        if newest is not None:
            back = ((inf - newest[0]) & 0xFFFFFFFF) >= 1 << 31
            if back or (inf == newest[0] and pos <= newest[1]):
                raise AuthError("replay", f"inference {inf} not after {newest[0]} of {src}")
        self.newest[src] = (inf, pos)
        self.stats.accepted += 1
        return msg, inf
