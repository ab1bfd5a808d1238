"""A minimal pcap (libpcap 2.4, microsecond timestamps) writer and reader for the medium's
air trace: one record per radio frame put on the air, as a sniffer next to the swarm would
capture it (``phy.Phy.psdu``), time-stamped with the simulated air clock (the start of the
frame's transmission on the one channel the medium models).

* ``ieee802154``: LINKTYPE_IEEE802_15_4_WITHFCS (195), MAC header + radio frame + FCS;
* ``ble2m`` / ``ble2m-aux``: LINKTYPE_BLUETOOTH_LE_LL (251), access address + AUX_ADV_IND PDU
  + CRC-24 (the primary-channel ADV_EXT_IND pointers are not recorded).

Wireshark/tshark open these files as they are; the radio frame behind the MAC header (or
inside the manufacturer-specific AD structure) is the AirType byte + protobuf message.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

MAGIC_US = 0xA1B2C3D4
SNAPLEN = 65535


class PcapWriter:
    def __init__(self, path: str | Path, linktype: int) -> None:
        self.path = Path(path)
        self._f: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._f.write(struct.pack("<IHHiIII", MAGIC_US, 2, 4, 0, 0, SNAPLEN, linktype))
        self.records = 0

    def write(self, t_us: float, data: bytes) -> None:
        if self._f is None:
            return
        t = int(round(t_us))
        self._f.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(data), len(data)))
        self._f.write(data)
        self.records += 1

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def read(path: str | Path) -> tuple[int, Iterator[tuple[float, bytes]]]:
    """(linktype, iterator of (timestamp_us, record bytes)) of a pcap file this module wrote
    (little-endian, microsecond resolution)."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: not a pcap file (too short)")
    magic, major, minor, _, _, _, linktype = struct.unpack_from("<IHHiIII", data, 0)
    if magic != MAGIC_US or (major, minor) != (2, 4):
        raise ValueError(f"{path}: not a little-endian microsecond pcap 2.4 file")

    def records() -> Iterator[tuple[float, bytes]]:
        off = 24
        while off < len(data):
            if off + 16 > len(data):
                raise ValueError(f"{path}: truncated record header at byte {off}")
            sec, usec, incl, orig = struct.unpack_from("<IIII", data, off)
            off += 16
            if incl != orig or off + incl > len(data):
                raise ValueError(f"{path}: truncated record at byte {off}")
            yield sec * 1e6 + usec, data[off : off + incl]
            off += incl

    return linktype, records()
