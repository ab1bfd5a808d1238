"""The radio links: the one definition of the IEEE 802.15.4 and BLE 2M framing and timing.

Everything that needs a link fact reads it here: the SomeGather MTUs of ``cats.artefacts.frames``,
the air bytes and transmit time of the resource model (``cats.analysis.resource``, ``cats report``),
the simulated medium and its pcap trace (``cats.sim``). This module imports nothing but the
standard library, so the light modules may import it.

A *radio frame* is the MAC payload a node hands its radio: the AirType dispatch byte
(``AIR_TYPE_BYTES``, proto/cats.proto ``AirType``) followed by an encoded ColumnFrame /
InputFrame / OutputFrame. The PHY model wraps it the way the real link does and says

* ``max_air`` - the largest radio frame the link carries (the medium rejects longer ones);
* ``column_mtu`` - the largest encoded ColumnFrame behind its dispatch byte (``max_air - 1``);
* ``on_air_bytes(n)`` - every byte the radio(s) transmit for an n-byte radio frame;
* ``airtime_us(n)`` - the channel time of that frame;
* ``psdu(...)`` - the link-layer bytes as a sniffer records them (what the pcap holds).

IEEE 802.15.4, 2.4 GHz O-QPSK, 250 kbit/s (32 us per byte)
    SHR 4 preamble + 1 SFD, PHR 1 length byte, then the PSDU (at most 127 bytes): MAC header
    of a broadcast data frame with PAN-ID compression and short addresses (frame control 2,
    sequence number 1, destination PAN 2, destination 0xFFFF 2, source 2 = 9 bytes), the
    radio frame, FCS 2 (CRC-16/KERMIT: ITU-T polynomial, reflected, init 0, sent LSB first).
    max_air = 127 - 9 - 2 = 116 bytes, so a ColumnFrame may have at most 115 bytes behind its
    dispatch byte. A node buffers one PSDU (127 bytes) per radio frame.

BLE, LE 2M PHY, 2 Mbit/s (4 us per byte), extended advertising
    Each radio frame is one AUX_ADV_IND on the secondary channel: preamble 2, access address 4
    (0x8E89BED6), PDU header 2, PDU payload <= 255, CRC 3 (CRC-24, init 0x555555). The PDU
    payload is the common extended advertising payload: extended header length + AdvMode 1,
    extended header flags 1, AdvA 6, ADI 2 (10 bytes), then AdvData = one manufacturer
    specific AD structure: length 1, type 0xFF 1, company id 2, the radio frame. max_air =
    255 - 10 - 4 = 241 bytes (a ColumnFrame of at most 240 bytes). A node buffers one PDU
    (header + payload, 257 bytes) per radio frame.
    The AUX_ADV_IND is announced by an ADV_EXT_IND on each primary advertising channel (LE 1M,
    8 us per byte: preamble 1, access address 4, header 2, payload 7 = ext header length 1 +
    flags 1 + ADI 2 + AuxPtr 3, CRC 3 = 17 bytes, 136 us each), and the controller waits at
    least T_MAFS = 300 us between the last ADV_EXT_IND and the AUX_ADV_IND. ``ble2m`` counts
    all of it (3 primary channels: what the node's link_ble.c sends per advertising event);
    ``ble2m-aux`` only the AUX_ADV_IND (a controller chaining frames into one advertising
    event comes close to it).

The medium serialises the airtime of all frames on one channel, back to back: no CSMA/CA
backoff, inter-frame spacing or acknowledgements (a synchronous round schedule, like the
paper's Mixer-based protocol, has none of those per frame), so it is a lower bound of a real
schedule's channel time and an upper bound of nothing else. The resource model uses the same
two numbers per frame (``on_air_bytes``, ``airtime_us``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

AIR_TYPE_BYTES = 1  # the AirType dispatch byte in front of every message in a radio frame

# ----------------------------------------------------------------------------------------------
# CRCs (the stream's CRC-16/CCITT-FALSE is cats.wire.stream.crc16)
# ----------------------------------------------------------------------------------------------


def _reflected_table(poly: int) -> list[int]:
    """Byte table of a reflected (LSB-first) CRC with the bit-reversed polynomial `poly`."""
    table = []
    for b in range(256):
        crc = b
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return table


def _reflected_crc(table: list[int], crc: int, data: bytes) -> int:
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


_KERMIT = _reflected_table(0x8408)  # x^16+x^12+x^5+1 (0x1021) reflected


def crc16_kermit(data: bytes) -> int:
    """CRC-16/KERMIT (the IEEE 802.15.4 FCS): poly 0x1021 reflected (0x8408), init 0, no final
    xor. check("123456789") = 0x2189."""
    return _reflected_crc(_KERMIT, 0, data)


BLE_CRC_INIT_ADV = 0x555555
BLE_ADV_ACCESS_ADDRESS = 0x8E89BED6

# LSB-first shift register with the polynomial x^24+x^10+x^9+x^6+x^4+x^3+x+1 reflected
# (0x65B -> 0xDA6000); the register holds the CRC bit-reversed.
_CRC24 = _reflected_table(0xDA6000)


def _rev24(v: int) -> int:
    return int(f"{v:024b}"[::-1], 2)


def crc24_ble(pdu: bytes, init: int = BLE_CRC_INIT_ADV) -> bytes:
    """The 3 CRC bytes of a BLE link-layer PDU (header + payload), as they follow the PDU in a
    LINKTYPE_BLUETOOTH_LE_LL record. Core spec Vol 6 Part B 3.1.1: the shift register starts
    at `init` (position 0 = its LSB... as the spec draws it), data bits enter LSB first, and
    the CRC is sent most significant bit first, i.e. as the reflected register, LSB first."""
    return _reflected_crc(_CRC24, _rev24(init), pdu).to_bytes(3, "little")


# ----------------------------------------------------------------------------------------------
# PHY models
# ----------------------------------------------------------------------------------------------

IEEE802154_PAN_ID = 0xCA75  # Kconfig CATS_802154_PAN_ID
IEEE802154_SHORT_ADDR_BASE = 0x0100  # Kconfig CATS_802154_SHORT_ADDR_BASE: node d = base + d
IEEE802154_GATEWAY_ADDR = 0x01FF  # the gateway's short address in the trace
IEEE802154_BROADCAST = 0xFFFF
BLE_COMPANY_ID = 0xFFFF  # Kconfig CATS_BLE_COMPANY_ID (reserved for testing)


def short_address(station: int) -> int:
    """802.15.4 short address of a node id (the gateway is -1)."""
    return IEEE802154_GATEWAY_ADDR if station < 0 else IEEE802154_SHORT_ADDR_BASE + station


@dataclass(frozen=True)
class Phy:
    """One link's framing and timing (see the module docstring)."""

    name: str
    max_air: int  # largest radio frame (AirType byte + message)
    us_per_byte: float
    overhead_bytes: int  # every byte on the air besides the radio frame
    framing_bytes: int  # of those, the bytes sent at us_per_byte around the radio frame
    extra_us: float  # fixed channel time per frame besides those (BLE primary PDUs + T_MAFS)
    frame_buffer_bytes: int  # one radio frame buffer in a node's RAM (PSDU / PDU)
    linktype: int  # pcap LINKTYPE of the frames psdu() builds
    note: str

    @property
    def column_mtu(self) -> int:
        """Largest encoded ColumnFrame (the radio frame minus its dispatch byte)."""
        return self.max_air - AIR_TYPE_BYTES

    @property
    def bitrate_bps(self) -> float:
        return 8e6 / self.us_per_byte

    def on_air_bytes(self, air_len: int) -> int:
        return air_len + self.overhead_bytes

    def airtime_us(self, air_len: int) -> float:
        return (air_len + self.framing_bytes) * self.us_per_byte + self.extra_us

    def psdu(self, station: int, seq: int, air: bytes) -> bytes:
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "max_air": self.max_air,
            "column_mtu": self.column_mtu,
            "bitrate_bps": self.bitrate_bps,
            "overhead_bytes": self.overhead_bytes,
            "framing_bytes": self.framing_bytes,
            "extra_us": self.extra_us,
            "frame_buffer_bytes": self.frame_buffer_bytes,
            "linktype": self.linktype,
            "note": self.note,
        }


# 802.15.4 frame control: data frame (1), PAN-ID compression (bit 6), short destination
# (mode 2 at bits 10-11), frame version 0 (2003), short source (mode 2 at bits 14-15).
IEEE802154_FC = 0x0001 | 0x0040 | (2 << 10) | (2 << 14)
IEEE802154_SHR_PHR = 6  # preamble 4 + SFD 1 + PHR 1
IEEE802154_MHR = 9  # frame control 2 + sequence 1 + PAN 2 + dst 2 + src 2
IEEE802154_FCS = 2
IEEE802154_PSDU_MAX = 127
IEEE802154_US_PER_BYTE = 32.0  # O-QPSK 250 kbit/s
LINKTYPE_IEEE802_15_4_WITHFCS = 195


@dataclass(frozen=True)
class Ieee802154(Phy):
    def psdu(self, station: int, seq: int, air: bytes) -> bytes:
        """MHR + radio frame + FCS (a LINKTYPE_IEEE802_15_4_WITHFCS record)."""
        mhr = struct.pack(
            "<HBHHH",
            IEEE802154_FC,
            seq & 0xFF,
            IEEE802154_PAN_ID,
            IEEE802154_BROADCAST,
            short_address(station),
        )
        body = mhr + air
        return body + struct.pack("<H", crc16_kermit(body))


IEEE802154 = Ieee802154(
    name="ieee802154",
    max_air=IEEE802154_PSDU_MAX - IEEE802154_MHR - IEEE802154_FCS,
    us_per_byte=IEEE802154_US_PER_BYTE,
    overhead_bytes=IEEE802154_SHR_PHR + IEEE802154_MHR + IEEE802154_FCS,
    framing_bytes=IEEE802154_SHR_PHR + IEEE802154_MHR + IEEE802154_FCS,
    extra_us=0.0,
    frame_buffer_bytes=IEEE802154_PSDU_MAX,
    linktype=LINKTYPE_IEEE802_15_4_WITHFCS,
    note="O-QPSK 250 kbit/s; SHR 5 + PHR 1 + MHR 9 (broadcast data, PAN-ID compression, "
    "short addresses) + FCS 2; PSDU <= 127",
)

BLE_PDU_PAYLOAD_MAX = 255
BLE_PDU_HEADER = 2
BLE_EXT_HEADER = 10  # ext header length/AdvMode 1 + flags 1 + AdvA 6 + ADI 2
BLE_AD_HEADER = 4  # AD length 1 + type 0xFF 1 + company id 2
BLE_2M_FRAMING = 2 + 4 + BLE_PDU_HEADER + 3  # preamble, access address, PDU header, CRC
BLE_2M_US_PER_BYTE = 4.0  # LE 2M: 2 Mbit/s
BLE_PRIMARY_PDU = 1 + 4 + 2 + 7 + 3  # ADV_EXT_IND on LE 1M: 17 bytes
BLE_PRIMARY_US_PER_BYTE = 8.0
BLE_T_MAFS_US = 300.0
BLE_PRIMARY_CHANNELS = 3
LINKTYPE_BLUETOOTH_LE_LL = 251
BLE_PDU_ADV_EXT_IND = 0x7  # ADV_EXT_IND and AUX_ADV_IND share PDU type 0b0111


@dataclass(frozen=True)
class Ble2M(Phy):
    def psdu(self, station: int, seq: int, air: bytes) -> bytes:
        """Access address + AUX_ADV_IND PDU + CRC-24 (a LINKTYPE_BLUETOOTH_LE_LL record).
        AdvA is a static random address C0:CA:75:00:hi:lo of the station; ADI: DID = the
        sequence number (12 bits), SID 0."""
        sid = 0xFFFF if station < 0 else station  # the gateway's address ends in ff:ff
        adva = bytes([sid & 0xFF, sid >> 8 & 0xFF, 0x00, 0x75, 0xCA, 0xC0])  # LE: C0:CA:75:...
        adi = struct.pack("<H", seq & 0x0FFF)  # DID bits 0-11, SID bits 12-15
        ext = bytes([9 & 0x3F, 0x01 | 0x08]) + adva + adi  # AdvMode 0; flags AdvA + ADI
        ad = bytes([3 + len(air), 0xFF]) + struct.pack("<H", BLE_COMPANY_ID) + air
        payload = ext + ad
        if len(payload) > BLE_PDU_PAYLOAD_MAX:
            raise ValueError(f"AUX_ADV_IND payload {len(payload)} > {BLE_PDU_PAYLOAD_MAX}")
        header = bytes([BLE_PDU_ADV_EXT_IND | 0x40, len(payload)])  # TxAdd = random
        pdu = header + payload
        return struct.pack("<I", BLE_ADV_ACCESS_ADDRESS) + pdu + crc24_ble(pdu)


BLE_AUX_FRAMING = BLE_2M_FRAMING + BLE_EXT_HEADER + BLE_AD_HEADER  # 25 bytes per AUX_ADV_IND

BLE2M = Ble2M(
    name="ble2m",
    max_air=BLE_PDU_PAYLOAD_MAX - BLE_EXT_HEADER - BLE_AD_HEADER,
    us_per_byte=BLE_2M_US_PER_BYTE,
    overhead_bytes=BLE_AUX_FRAMING + BLE_PRIMARY_CHANNELS * BLE_PRIMARY_PDU,
    framing_bytes=BLE_AUX_FRAMING,
    extra_us=BLE_PRIMARY_CHANNELS * BLE_PRIMARY_PDU * BLE_PRIMARY_US_PER_BYTE + BLE_T_MAFS_US,
    frame_buffer_bytes=BLE_PDU_HEADER + BLE_PDU_PAYLOAD_MAX,
    linktype=LINKTYPE_BLUETOOTH_LE_LL,
    note="extended advertising: AUX_ADV_IND on LE 2M (preamble 2 + AA 4 + header 2 + ext "
    "header 10 + AD header 4 + CRC 3) announced by 3 ADV_EXT_IND on LE 1M (17 B, 136 us "
    "each) + T_MAFS 300 us",
)

BLE2M_AUX = Ble2M(
    name="ble2m-aux",
    max_air=BLE2M.max_air,
    us_per_byte=BLE_2M_US_PER_BYTE,
    overhead_bytes=BLE_AUX_FRAMING,
    framing_bytes=BLE_AUX_FRAMING,
    extra_us=0.0,
    frame_buffer_bytes=BLE2M.frame_buffer_bytes,
    linktype=LINKTYPE_BLUETOOTH_LE_LL,
    note="AUX_ADV_IND on LE 2M only (primary-channel ADV_EXT_IND and T_MAFS not counted)",
)

PHYS: dict[str, Phy] = {p.name: p for p in (IEEE802154, BLE2M, BLE2M_AUX)}


def get(name: str) -> Phy:
    try:
        return PHYS[name]
    except KeyError:
        raise ValueError(f"unknown link {name!r}; choose from {sorted(PHYS)}") from None
