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


class Decoder:
    """Incremental decoder: feed any chunks, get the complete messages in order.

    Counters (same meaning as struct cats_stream_decoder's): ``messages``, ``bad_crc``,
    ``bad_length`` (N above the limit), ``skipped`` (bytes dropped while hunting for sync,
    including those of rejected candidates) and ``stalled`` (partial messages given up by
    ``flush``)."""

    def __init__(self, max_len: int = MAX_PAYLOAD) -> None:
        if not 0 <= max_len <= 0xFFFF:
            raise ValueError("max_len must fit the 16-bit length field")
        self.max_len = max_len
        self._buf = bytearray()
        self.messages = 0
        self.bad_crc = 0
        self.bad_length = 0
        self.skipped = 0
        self.stalled = 0

    @property
    def pending(self) -> int:
        """Bytes held for a message not yet complete."""
        return len(self._buf)

    def _drop(self, n: int) -> None:
        del self._buf[:n]
        self.skipped += n

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        buf = self._buf
        while True:
            i = buf.find(0xCA)
            if i < 0:
                self._drop(len(buf))
                break
            if i:
                self._drop(i)
            if len(buf) < 2:
                break
            if buf[1] != 0x75:
                self._drop(1)
                continue
            if len(buf) < 5:
                break
            n = buf[3] | buf[4] << 8
            if n > self.max_len:
                self.bad_length += 1
                self._drop(1)
                continue
            if len(buf) < OVERHEAD + n:
                break
            if crc16(bytes(buf[2 : 5 + n])) != (buf[5 + n] | buf[6 + n] << 8):
                self.bad_crc += 1
                self._drop(1)
                continue
            out.append((buf[2], bytes(buf[5 : 5 + n])))
            self.messages += 1
            del buf[: OVERHEAD + n]
        return out

    def flush(self) -> list[tuple[int, bytes]]:
        """The line has been idle: give up the held partial message (drop its first byte,
        rescan the rest, repeatedly); returns the complete messages found in what was held."""
        out: list[tuple[int, bytes]] = []
        while self._buf:
            out += self.feed(b"")
            if self._buf:
                self.stalled += 1
                self._drop(1)
        return out
