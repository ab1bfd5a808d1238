"""The framed byte stream of proto/cats.proto (serial ports, UARTs, sockets), both directions:

    0xCA 0x75 | type (1) | length N (2, LE) | payload (N bytes) | CRC-16 (2, LE)

CRC-16/CCITT-FALSE (binascii.crc_hqx(data, 0xFFFF)) over type, length and payload. The same
rules as the C implementation (cats_zephyr_module/src/core/stream.c, include/cats/cats_stream.h),
which tests/test_sim_c.py holds to golden bytes both ways:

- a sender never sends N > MAX_PAYLOAD (8192); messages of the simulation link (types 1-4)
  are at most SIM_MAX_PAYLOAD (1024) bytes, a GatewayMessage (type 8) at most MAX_PAYLOAD;
- a receiver accepts N <= its own limit (``Decoder(max_len)``); a longer length, or a bad CRC,
  makes it drop the first sync byte and hunt for the next 0xCA 0x75 *from the byte after it*,
  so a frame hidden behind garbage that happened to look like a header is still found;
- resynchronisation costs time linear in the bytes received, crafted garbage included
  (``Decoder``; stream.c with ``cats_stream_decoder_prefix``);
- a false header with a plausible length makes the receiver wait for that many bytes: where a
  line may carry garbage and then fall silent, the receiver calls ``Decoder.flush()`` after a
  while without bytes (the C gateway: 200 ms) to give up the held partial message and rescan.

``encode(type, payload) -> bytes`` and ``Decoder().feed(data) -> [(type, payload), ...]``.
"""

from __future__ import annotations

import binascii
import struct

SYNC = b"\xca\x75"
OVERHEAD = 7  # sync 2 + type 1 + length 2 + crc 2
MAX_PAYLOAD = 8192  # largest N any sender may send (a GatewayMessage)
SIM_MAX_PAYLOAD = 1024  # largest N on the simulation link (types 1-4)

# Message types (payload by type).
AIR = 1  # one radio frame: AirType byte + ColumnFrame / InputFrame / OutputFrame
HELLO = 2  # SimHello (station -> medium, first message)
SLOT_END = 3  # SlotEnd (medium -> stations)
STATION = 4  # StationEvent (medium -> gateway)
GATEWAY = 8  # GatewayMessage (bridge <-> gateway)

# AirType dispatch byte (proto AirType).
AIR_COLUMN = 1
AIR_INPUT = 2
AIR_OUTPUT = 3


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final xor)."""
    return binascii.crc_hqx(data, crc)


def encode(msg_type: int, payload: bytes) -> bytes:
    """One framed message."""
    if not 0 <= msg_type <= 0xFF:
        raise ValueError(f"message type {msg_type} is not a byte")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = struct.pack("<BH", msg_type, len(payload)) + bytes(payload)
    return SYNC + body + struct.pack("<H", crc16(body))


def air(air_type: int, message: bytes) -> bytes:
    """A type-1 frame: the AirType dispatch byte + the encoded message."""
    return encode(AIR, bytes([air_type]) + bytes(message))


_STEP = [crc16(bytes([b]), 0) for b in range(256)]  # the CRC table: one byte from state 0
_XP = [1]  # _XP[m] = x^(8m) mod P: the state 1 carried through m zero bytes (grown on use)
_CL: list[int] = []  # carry-less products of two bytes, [x << 8 | y] (built on first use)


def _clmul8(x: int, y: int) -> int:
    r = 0
    for i in range(8):
        if y >> i & 1:
            r ^= x << i
    return r


def _advance(s: int, m: int) -> int:
    """CRC state s carried through m zero bytes: s * x^(8m) mod P, by table lookups."""
    if not _CL:
        _CL.extend(_clmul8(x, y) for x in range(256) for y in range(256))
    while len(_XP) <= m:
        c = _XP[-1]
        _XP.append(((c << 8) & 0xFFFF) ^ _STEP[c >> 8])
    c, cl, step = _XP[m], _CL, _STEP
    sh, sl, ch, cl_ = s >> 8, s & 0xFF, c >> 8, c & 0xFF
    t = (cl[sh << 8 | ch] << 16) ^ ((cl[sh << 8 | cl_] ^ cl[sl << 8 | ch]) << 8) ^ cl[sl << 8 | cl_]
    h = t >> 16  # h * x^16 mod P: two zero bytes through the table
    h = ((h << 8) & 0xFFFF) ^ step[h >> 8]
    h = ((h << 8) & 0xFFFF) ^ step[h >> 8]
    return h ^ (t & 0xFFFF)


class Decoder:
    """Incremental decoder: feed any chunks, get the complete messages in order.

    Counters (same meaning as struct cats_stream_decoder's): ``messages``, ``bad_crc``,
    ``bad_length`` (N above the limit), ``skipped`` (bytes dropped while hunting for sync,
    including those of rejected candidates) and ``stalled`` (partial messages given up by
    ``flush``).

    Work is linear in the bytes fed, whatever they are: rejected bytes advance a scan position
    (no copying per byte), and once checking candidates has cost more than twice the bytes
    fed (a crafted line: a false header every few bytes, each with a long length) a candidate's
    CRC comes from running CRC states kept per byte (O(log N) per candidate, as stream.c with
    cats_stream_decoder_prefix). The messages found are the same either way."""

    def __init__(self, max_len: int = MAX_PAYLOAD) -> None:
        if not 0 <= max_len <= 0xFFFF:
            raise ValueError("max_len must fit the 16-bit length field")
        self.max_len = max_len
        self._buf = bytearray()
        self._pos = 0  # held bytes: _buf[_pos:]
        self._fed = 0  # bytes fed so far
        self._work = 0  # bytes CRC'd directly so far
        self.direct_budget = 65536  # bytes CRC'd directly beyond twice those fed (tests: 0)
        self._pre_lo = 0  # _pre[k]: CRC state (from 0 at _pre_lo) over _buf[_pre_lo:_pre_lo + k]
        self._pre: list[int] = [0]
        self.messages = 0
        self.bad_crc = 0
        self.bad_length = 0
        self.skipped = 0
        self.stalled = 0

    @property
    def pending(self) -> int:
        """Bytes held for a message not yet complete."""
        return len(self._buf) - self._pos

    def _drop(self, n: int) -> None:
        self._pos += n
        self.skipped += n

    def _crc(self, a: int, b: int) -> int:
        """CRC-16 (init 0xFFFF) of _buf[a:b]."""
        n = b - a
        if n <= 64 or self._work + n <= 2 * self._fed + self.direct_budget:
            self._work += n
            return crc16(memoryview(self._buf)[a:b])
        pre = self._pre
        if not self._pre_lo <= a < self._pre_lo + len(pre):
            self._pre_lo, pre = a, [0]
            self._pre = pre
        s, step, buf = pre[-1], _STEP, self._buf
        for byte in buf[self._pre_lo + len(pre) - 1 : b]:
            s = ((s << 8) & 0xFFFF) ^ step[(s >> 8) ^ byte]
            pre.append(s)
        lo = self._pre_lo
        return pre[b - lo] ^ _advance(pre[a - lo] ^ 0xFFFF, n)

    def _compact(self) -> None:
        pos = self._pos
        if pos == len(self._buf):
            self._buf.clear()
        elif pos > 4096 and 2 * pos > len(self._buf):
            del self._buf[:pos]
        else:
            return
        self._pos = 0
        self._pre_lo -= pos
        if self._pre_lo < 0:  # keep the states of the bytes still held
            k = -self._pre_lo
            if k < len(self._pre):
                del self._pre[:k]
                self._pre_lo = 0
            else:
                self._pre_lo, self._pre = 0, [0]

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        self._fed += len(data)
        out: list[tuple[int, bytes]] = []
        buf = self._buf
        while True:
            pos = self._pos
            i = buf.find(0xCA, pos)
            if i < 0:
                self._drop(len(buf) - pos)
                break
            if i > pos:
                self._drop(i - pos)
                pos = i
            avail = len(buf) - pos
            if avail < 2:
                break
            if buf[pos + 1] != 0x75:
                self._drop(1)
                continue
            if avail < 5:
                break
            n = buf[pos + 3] | buf[pos + 4] << 8
            if n > self.max_len:
                self.bad_length += 1
                self._drop(1)
                continue
            if avail < OVERHEAD + n:
                break
            end = pos + 5 + n
            if self._crc(pos + 2, end) != (buf[end] | buf[end + 1] << 8):
                self.bad_crc += 1
                self._drop(1)
                continue
            out.append((buf[pos + 2], bytes(buf[pos + 5 : end])))
            self.messages += 1
            self._pos = end + 2
        self._compact()
        return out

    def take_pending(self) -> bytes:
        """The held bytes of a message not yet complete, handed over (the decoder is empty)."""
        held = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = 0
        self._pre_lo, self._pre = 0, [0]
        return held

    def flush(self) -> list[tuple[int, bytes]]:
        """The line has been idle: give up the held partial message (drop its first byte,
        rescan the rest, repeatedly); returns the complete messages found in what was held."""
        out: list[tuple[int, bytes]] = []
        while self.pending:
            out += self.feed(b"")
            if self.pending:
                self.stalled += 1
                self._drop(1)
        self._compact()
        return out
