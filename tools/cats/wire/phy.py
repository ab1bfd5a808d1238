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

MAC timing (``Mac``, ``Phy.mac``): the channel time a frame costs besides its own airtime,
as the runtime really sends it (``mac_us``), and the old back-to-back figure (``airtime_us``,
reported as ``airtime_payload_only``) next to it:

* IEEE 802.15.4 (``MAC_802154_NRF``): the firmware's link (src/zephyr/link_ieee802154.c)
  sends each frame with one sendto() on the native L2, which hands it to the nRF 802.15.4
  driver in IEEE802154_TX_MODE_CSMA_CA (the driver has IEEE802154_HW_CSMA; L2
  ieee802154.c ieee802154_radio_send), broadcast without ACK request. The driver's unslotted
  CSMA-CA (IEEE 802.15.4-2020 6.2.5.1; hal_nordic nrf_802154_config.h: macMinBE 3, macMaxBE 5,
  macMaxCSMABackoffs 4) on an idle channel (ordered turns: one sender at a time) costs the
  random backoff, mean of uniform{0 .. 2^3 - 1} = 3.5 aUnitBackoffPeriods of 20 symbols
  (1120 us), one CCA of 8 symbols (128 us) and the switch to TX. The standard allows that
  switch up to aTurnaroundTime (12 symbols, 192 us); the nRF radio's fast ramp-up takes less,
  and the model uses what the driver takes on nrf52_bsim (the 2G4 phy's dump of every frame:
  gaps of 229 us, then 208 + 320 k us for backoffs k = 1..7, uniform; mean 83 us beyond the
  CCA): 1331 us per frame. The driver inserts no inter-frame spacing (NRF_802154_IFS_ENABLED
  0), so no LIFS; ``MAC_802154_STANDARD`` is a strictly conforming sender (aTurnaroundTime,
  and macLIFSPeriod of 40 symbols, 640 us, after frames > aMaxSIFSFrameSize 18 bytes).
  ``MAC_802154_DIRECT`` is the firmware's other choice, Kconfig CATS_802154_ACCESS_DIRECT
  (CONFIG_NET_L2_IEEE802154_RADIO_ALOHA: the L2 sends in IEEE802154_TX_MODE_DIRECT, no backoff,
  no CCA): the switch to TX only, 62 us between frames on nrf52_bsim. ``FIRMWARE_MACS``
  names the firmware's choices per link (``cats sim --mac``, ``get(link, mac)``).
* BLE (``MAC_BLE_FIRMWARE``): link_ble.c advertises each frame as its own extended
  advertising set start with CONFIG_CATS_BLE_ADV_EVENTS events (``BLE_ADV_EVENTS``, default 1)
  at a 20 ms interval (0x20 x 0.625 ms) on the LE 1M primary / LE 2M secondary PHY, its
  scanner paused while the frame is on the air; the next frame waits for the set's `sent`
  callback. The standard fixes only minimums (T_MAFS >= 300 us), so the constants are
  Zephyr 4.3's controller (LL split) measured on nrf52_bsim from the 2G4 phy's dump of every
  PDU: each frame is an advertising event of 3 ADV_EXT_IND 48 us apart (in ``airtime_us``
  with T_MAFS), the AUX_ADV_IND 446 us later than T_MAFS after them, an AUX_CHAIN_IND T_MAFS
  after it when the frame has more than 191 bytes of advertising data (the controller's
  PDU_AC_EXT_AD_DATA_LEN_MAX: ``chain_us``), and 2258 us from the end of one event to the
  first ADV_EXT_IND of the next frame (``BLE_FRAME_GAP_US``: the sent report, the host's set
  data + enable, the controller's start anchor; BabbleSim runs the CPU in zero time, so on
  silicon the host's own time comes on top). Further events (CONFIG_CATS_BLE_ADV_EVENTS > 1)
  follow advInterval + advDelay (uniform 0..10 ms, mean 5 ms: Core spec Vol 6 Part B
  4.4.2.2.1) later: 25 ms each that hold the sender but not the receivers, who have the frame
  after the first event, so the last frame of a turn does not cost them (``repeat_us``).
  ``ble2m-aux`` (one advertising event chaining every frame as AUX_CHAIN_IND, each T_MAFS
  after the previous) costs T_MAFS per frame.

The schedule is the firmware's ordered turns (cats_runner.c, CONFIG_CATS_TURN_FRAME_US): node
d sends once every node before it is done (all of its columns arrived, or its slot of
(frames + 1) x turn time passed). Without loss a turn ends when its last frame is received, so
the exchange is every frame one after the other, each with its MAC time; a slot time-out (a
lost frame) adds up to (frames + 1) x CONFIG_CATS_TURN_FRAME_US and is not modelled here. The
OutputFrames take the same turns by time alone (air_io.c): node d sends 2 d x
CONFIG_CATS_TURN_FRAME_US (``turn_frame_us``) after the last exchange, which
``output_turns_us`` adds. The resource model uses the same numbers per frame
(``on_air_bytes``, ``airtime_us``, ``mac_us``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

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


# IEEE 802.15.4-2020, O-QPSK 2.4 GHz PHY (clause 12): 62.5 ksymbol/s, 16 us per symbol.
IEEE802154_SYMBOL_US = 16.0
A_TURNAROUND_SYMBOLS = 12  # aTurnaroundTime (11.3, table 11-1): RX-to-TX / TX-to-RX
MAC_SIFS_SYMBOLS = 12  # macSIFSPeriod (8.4.3.1, table 8-94)
MAC_LIFS_SYMBOLS = 40  # macLIFSPeriod, after frames longer than aMaxSIFSFrameSize
A_MAX_SIFS_FRAME_SIZE = 18  # bytes (MPDU)
A_UNIT_BACKOFF_SYMBOLS = 20  # aUnitBackoffPeriod (8.1.3, table 8-93)
CCA_SYMBOLS = 8  # CCA detection time (10.2.8): 8 symbols
MAC_MIN_BE = 3  # macMinBe default (table 8-94); nRF driver NRF_802154_CSMA_CA_MIN_BE_DEFAULT 3
# The nRF 802.15.4 driver's switch to TX, measured on nrf52_bsim from the 2G4 phy's dump of a
# loss-free verytiny swarm (D = 4, 2139 frames; bench/swarm/README.md "Checked against
# nrf52_bsim"): 62 us between frames sent without CCA (direct), and 83 us on average after
# the CCA (CSMA-CA: 101 us with no backoff, 80 us after one). The standard's bound is
# aTurnaroundTime, 192 us.
NRF_TX_GAP_DIRECT_US = 62.0
NRF_CCA_TO_TX_US = 83.0

# BLE Core spec v5.x, Vol 6 Part B: T_MAFS >= 300 us (4.1.2), advDelay pseudo-random 0..10 ms
# per advertising event (4.4.2.2.1).
BLE_ADV_DELAY_MEAN_US = 5000.0
BLE_ADV_INTERVAL_US = 20000.0  # link_ble.c BT_LE_ADV_PARAM_INIT(..., 0x20, 0x20): 32 x 625 us
# Kconfig CATS_BLE_ADV_EVENTS default (cats_zephyr_module/Kconfig; tests/test_timing.py checks
# that the two agree): advertising events per frame.
BLE_ADV_EVENTS = 1
# Zephyr 4.3's own controller (LL split) as link_ble.c drives it, measured on nrf52_bsim: the
# 2G4 phy's dump (-dump: every PDU's start and end) of a loss-free verytiny swarm (D = 4, 1174
# advertising events; bench/swarm/README.md "BLE timing"). The spec gives only minimums here.
BLE_PRIMARY_GAP_US = 48.0  # between the 3 ADV_EXT_IND (starts 184 us apart, 136 us each)
# First ADV_EXT_IND start -> AUX_ADV_IND start: 1250 us, i.e. 446 us beyond the primaries
# (3 x 136 + 2 x 48 = 504 us) and T_MAFS: the AuxPtr offset the controller schedules.
BLE_AUX_OFFSET_EXTRA_US = 1250.0 - 504.0 - 300.0
# End of a frame's advertising event -> the first ADV_EXT_IND of the next frame, of the same
# station or of the next one in the turn order (2253-2274 us, median 2258): the set's `sent`
# report, the host's set data + enable and the controller's start anchor (ull_adv.c:
# EVENT_OVERHEAD_START_US 428 us and the ticker). BabbleSim runs the CPU in zero time, so on
# silicon the host's HCI processing comes on top: a lower bound there.
BLE_FRAME_GAP_US = 2258.0
# The controller puts at most 191 bytes of advertising data in one PDU (ll_sw/pdu.h
# PDU_AC_EXT_AD_DATA_LEN_MAX: 255 less a 64-byte worst-case extended header); the rest of a
# longer frame follows in an AUX_CHAIN_IND T_MAFS after the AUX_ADV_IND (the AUX_ADV_IND gains
# an AuxPtr of 3 bytes, the AUX_CHAIN_IND has preamble 2 + AA 4 + header 2 + ext header 4
# (length/AdvMode, flags, ADI) + CRC 3 around its data).
BLE_PDU_AD_MAX = 191
BLE_CHAIN_US = 300.0 + (3 + 2 + 4 + 2 + 4 + 3) * 4.0


def csma_backoff_mean_us(min_be: int = MAC_MIN_BE) -> float:
    """Expected first backoff of unslotted CSMA-CA: mean of uniform{0 .. 2^BE - 1} units."""
    return (2**min_be - 1) / 2 * A_UNIT_BACKOFF_SYMBOLS * IEEE802154_SYMBOL_US


@dataclass(frozen=True)
class Mac:
    """Channel time of the MAC the runtime uses, besides each frame's own airtime.

    ``per_frame_us``: before (or around) every frame, on the critical path (backoff, CCA,
    turnaround, IFS, spacing of the primary advertising PDUs); ``repeat_us``: after a frame,
    holding its sender but not its receivers (BLE: the repeated advertising events), so it
    costs every frame of a turn but the last."""

    name: str
    per_frame_us: float
    repeat_us: float
    parts: tuple[tuple[str, float], ...]
    note: str
    # radio frames longer than this many bytes cost chain_us more (BLE: the AUX_CHAIN_IND the
    # controller adds past BLE_PDU_AD_MAX bytes of advertising data); 0: never
    chain_above: int = 0
    chain_us: float = 0.0

    def frame_us(self, air_len: int) -> float:
        """The MAC's channel time around one radio frame of air_len bytes."""
        chained = self.chain_above and air_len > self.chain_above
        return self.per_frame_us + (self.chain_us if chained else 0.0)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "per_frame_us": self.per_frame_us,
            "repeat_us": self.repeat_us,
            "parts": dict(self.parts),
            "chain_above": self.chain_above,
            "chain_us": self.chain_us,
            "note": self.note,
        }


def _mac(
    name: str,
    parts: list[tuple[str, float]],
    note: str,
    repeat_us: float = 0.0,
    chain_above: int = 0,
    chain_us: float = 0.0,
) -> Mac:
    return Mac(name, sum(v for _, v in parts), repeat_us, tuple(parts), note, chain_above, chain_us)


_BACKOFF = csma_backoff_mean_us()
_CCA = CCA_SYMBOLS * IEEE802154_SYMBOL_US
_TURNAROUND = A_TURNAROUND_SYMBOLS * IEEE802154_SYMBOL_US
MAC_802154_NRF = _mac(
    "csma-ca (nRF 802.15.4 driver)",
    [("backoff_mean", _BACKOFF), ("cca", _CCA), ("turnaround", NRF_CCA_TO_TX_US)],
    "unslotted CSMA-CA on an idle channel: mean backoff 3.5 x 320 us, CCA 128 us, the switch to "
    "TX 83 us (nrf52_bsim); no IFS (NRF_802154_IFS_ENABLED 0), no ACK (broadcast)",
)
MAC_802154_STANDARD = _mac(
    "csma-ca + LIFS",
    [
        ("lifs", MAC_LIFS_SYMBOLS * IEEE802154_SYMBOL_US),
        ("backoff_mean", _BACKOFF),
        ("cca", _CCA),
        ("turnaround", _TURNAROUND),
    ],
    "a strictly conforming sender: macLIFSPeriod 640 us after every frame > 18 bytes, mean "
    "backoff 3.5 x 320 us, CCA 128 us, aTurnaroundTime 192 us",
)
MAC_802154_DIRECT = _mac(
    "direct (no CSMA-CA)",
    [("turnaround", NRF_TX_GAP_DIRECT_US)],
    "IEEE802154_TX_MODE_DIRECT (Kconfig CATS_802154_ACCESS_DIRECT: "
    "CONFIG_NET_L2_IEEE802154_RADIO_ALOHA): the ordered turns already keep one sender on the "
    "channel; 62 us between frames (nrf52_bsim) only",
)
MAC_NONE = _mac("none", [], "back to back: no gaps (the payload-only figure)")
MAC_BLE_FIRMWARE = _mac(
    f"extended advertising, {BLE_ADV_EVENTS} event{'s' if BLE_ADV_EVENTS > 1 else ''}",
    [
        ("frame_gap", BLE_FRAME_GAP_US),
        ("primary_gaps", 2 * BLE_PRIMARY_GAP_US),
        ("aux_offset", BLE_AUX_OFFSET_EXTRA_US),
    ],
    "per frame, as Zephyr's controller runs link_ble.c on nrf52_bsim: 2258 us from the previous "
    "advertising event to this one (sent report, set data + enable, start anchor), one event "
    "(3 ADV_EXT_IND 48 us apart, the AUX_ADV_IND 446 us past T_MAFS, an AUX_CHAIN_IND T_MAFS "
    "later for frames over 191 bytes of advertising data) and, for every frame of a turn but "
    f"the last, {BLE_ADV_EVENTS - 1} repeated events x (advInterval 20 ms + mean advDelay 5 ms)",
    repeat_us=(BLE_ADV_EVENTS - 1) * (BLE_ADV_INTERVAL_US + BLE_ADV_DELAY_MEAN_US),
    chain_above=BLE_PDU_AD_MAX - 4,  # BLE_AD_HEADER: length, type, company id
    chain_us=BLE_CHAIN_US,
)
MAC_BLE_CHAIN = _mac(
    "AUX_CHAIN_IND chain",
    [("t_mafs", 300.0)],
    "every frame an AUX_CHAIN_IND of one advertising event, T_MAFS 300 us after the previous",
)


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
    mac: Mac = MAC_NONE  # the MAC timing of the runtime's link (module docstring)
    # Kconfig CATS_TURN_FRAME_US default of the link: spaces the nodes' OutputFrames
    turn_frame_us: float = 0.0

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
        """Channel time of the frame alone (back to back: ``airtime_payload_only``)."""
        return (air_len + self.framing_bytes) * self.us_per_byte + self.extra_us

    def mac_us(self, air_len: int) -> float:
        """Channel time of the frame with the MAC's per-frame gaps (not ``repeat_us``)."""
        return self.airtime_us(air_len) + self.mac.frame_us(air_len)

    def output_turns_us(self, outputs: list[tuple[int, int]]) -> float:
        """Channel time of the output phase: the nodes finish the last exchange together, and
        node d sends its OutputFrames d x 2 x ``turn_frame_us`` later (air_io.c), or once the
        channel is free. outputs: (node, radio frame length) in the order sent."""
        t = 0.0
        for node, air_len in sorted(outputs, key=lambda o: o[0]):
            t = max(t, node * 2.0 * self.turn_frame_us) + self.mac_us(air_len)
        return t

    def schedule_us(self, frames_by_sender: dict[int, list[int]]) -> float:
        """Modelled channel time of one ordered-turn schedule: every sender's radio frames
        (their lengths) one after the other, each with its MAC time, and the repeats of every
        frame but the last of each turn."""
        total = 0.0
        for lens in frames_by_sender.values():
            total += sum(self.mac_us(n) for n in lens)
            total += self.mac.repeat_us * max(len(lens) - 1, 0)
        return total

    def floor_us(self, payload_bytes: int) -> float:
        """The payload floor: payload bits at the link's bit rate, nothing else."""
        return payload_bytes * 8e6 / self.bitrate_bps

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
            "mac": self.mac.to_dict(),
            "turn_frame_us": self.turn_frame_us,
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
    mac=MAC_802154_NRF,
    turn_frame_us=6000.0,
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
    mac=MAC_BLE_FIRMWARE,
    turn_frame_us=60000.0,
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
    mac=MAC_BLE_CHAIN,
    turn_frame_us=60000.0,
)

# Other MAC models of a link, for comparison (bench/swarm): by link name.
MAC_VARIANTS: dict[str, tuple[Mac, ...]] = {
    "ieee802154": (MAC_NONE, MAC_802154_DIRECT, MAC_802154_NRF, MAC_802154_STANDARD),
    "ble2m": (MAC_NONE, MAC_BLE_FIRMWARE),
    "ble2m-aux": (MAC_NONE, MAC_BLE_CHAIN),
}

# The firmware's channel-access choices per link (the first is the default): ``cats sim --mac``.
# ieee802154: Kconfig CATS_802154_CHANNEL_ACCESS (csma: CATS_802154_ACCESS_CSMA, direct:
# CATS_802154_ACCESS_DIRECT).
FIRMWARE_MACS: dict[str, dict[str, Mac]] = {
    "ieee802154": {"csma": MAC_802154_NRF, "direct": MAC_802154_DIRECT},
    "ble2m": {"adv": MAC_BLE_FIRMWARE},
    "ble2m-aux": {"chain": MAC_BLE_CHAIN},
}
MAC_CHOICES = tuple(sorted({k for m in FIRMWARE_MACS.values() for k in m}))

PHYS: dict[str, Phy] = {p.name: p for p in (IEEE802154, BLE2M, BLE2M_AUX)}


def get(name: str, mac: str | None = None) -> Phy:
    """The link `name` with the firmware's MAC `mac` (a key of ``FIRMWARE_MACS[name]``; None:
    the default)."""
    try:
        phy = PHYS[name]
    except KeyError:
        raise ValueError(f"unknown link {name!r}; choose from {sorted(PHYS)}") from None
    if mac is None:
        return phy
    try:
        return replace(phy, mac=FIRMWARE_MACS[name][mac])
    except KeyError:
        raise ValueError(
            f"link {name!r} has no MAC {mac!r}; choose from {sorted(FIRMWARE_MACS[name])}"
        ) from None
