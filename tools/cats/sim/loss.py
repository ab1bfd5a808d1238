"""Loss models of the simulated radio medium: seeded, reproducible, order independent.

Whether a ColumnFrame reaches a receiver is decided from a hash of
(seed, inference id, exchange, sender, fragment, receiver), never from a random generator
advanced in arrival order, so the same swarm run under the same seed loses the same frames
however the processes are scheduled. InputFrames and OutputFrames are not subject to loss
(the gateway's input broadcast and the result uplink are modelled as acknowledged, lossless
transfers; their airtime is counted).

``--loss`` syntax: one or more models joined with ``+`` (or ``;``), each ``kind:args``:

``none``                          nothing lost (also the empty string)
``iid:P``                         every (frame, receiver) delivery lost independently with
                                  probability P
``paper:X``                        the paper's loss model (its reference code's message-dropout
                                  sampler with all three modes at X): per exchange, a whole
                                  sender -> receiver message (every fragment of that sender's
                                  exchange) is lost with X on its own, every message to a
                                  receiver with X (it heard nothing), every message of a sender
                                  with X (nobody heard it); a message survives with (1 - X)^3.
                                  Same draws as ``cats evaluate --loss-model paper`` in law
``ge:P_GB,P_BG,LOSS_G,LOSS_B``    Gilbert-Elliott bursts: a two-state Markov chain per link
                                  (sender -> receiver) advanced once per frame of that sender
                                  in (inference, exchange, fragment) order; good -> bad with
                                  P_GB, bad -> good with P_BG; a frame is lost with LOSS_G in
                                  the good and LOSS_B in the bad state. Chains start good.
``cut:A/B[@WHEN]``                every frame between a node of group A and one of group B is
                                  lost (both directions) from WHEN on (default: always).
                                  Groups: ``0-3``, ``0,2,5-7``.
``die:N[,M...]@WHEN``             node N dies at WHEN: the medium stops delivering to and from
                                  it (also its inputs and outputs) and reports it dead to the
                                  gateway; the process itself keeps running.

``WHEN`` is ``inference=I[,exchange=E]`` - the I-th inference the medium sees (0-based, in
the order the gateway starts them) at exchange E (default: at its input broadcast, before
exchange 0) - or ``t=SECONDS`` of wall-clock time after the medium started.

The Gilbert-Elliott state is the only memory: per link it depends on the sequence of that
sender's frames, which arrive in order on the sender's one stream, so it too is independent
of how different senders interleave.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

# Causes reported in the drop log.
CAUSES = ("iid", "ge", "cut", "paper")


def uniform(seed: int, tag: bytes, *key: int) -> float:
    """A uniform number in [0, 1) from a keyed hash (53 bits)."""
    h = hashlib.blake2b(struct.pack(f"<q{len(key)}q", seed, *key), digest_size=8, person=tag)
    return (int.from_bytes(h.digest(), "little") >> 11) / float(1 << 53)


@dataclass(frozen=True)
class When:
    """A point of the run: (inference ordinal, exchange) with -1 = the input broadcast, or a
    wall-clock time in seconds after the medium started."""

    inference: int | None = None
    exchange: int = -1
    t: float | None = None

    def reached(self, ordinal: int, exchange: int) -> bool:
        if self.inference is None:
            return False
        return (ordinal, exchange) >= (self.inference, self.exchange)

    @classmethod
    def parse(cls, text: str) -> When:
        fields: dict[str, str] = {}
        for part in text.split(","):
            k, sep, v = part.partition("=")
            if not sep:
                raise ValueError(f"expected key=value in {text!r}")
            fields[k.strip()] = v.strip()
        if set(fields) == {"t"}:
            return cls(t=float(fields["t"]))
        if "inference" not in fields or not set(fields) <= {"inference", "exchange"}:
            raise ValueError(f"WHEN must be inference=I[,exchange=E] or t=SECONDS, not {text!r}")
        inf, ex = int(fields["inference"]), int(fields.get("exchange", -1))
        if inf < 0 or ex < -1:
            raise ValueError(f"negative inference/exchange in {text!r}")
        return cls(inference=inf, exchange=ex)

    def __str__(self) -> str:
        if self.t is not None:
            return f"t={self.t:g}"
        return f"inference={self.inference}" + (
            f",exchange={self.exchange}" if self.exchange >= 0 else ""
        )


def parse_nodes(text: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        a, sep, b = part.partition("-")
        lo, hi = int(a), int(b) if sep else int(a)
        if lo < 0 or hi < lo:
            raise ValueError(f"bad node range {part!r}")
        out.update(range(lo, hi + 1))
    if not out:
        raise ValueError(f"empty node group {text!r}")
    return frozenset(out)


@dataclass(frozen=True)
class Iid:
    p: float

    def __str__(self) -> str:
        return f"iid:{self.p:g}"


@dataclass(frozen=True)
class PaperLoss:
    """Message-level loss with the three modes of message-dropout, all at probability x."""

    p: float

    def __str__(self) -> str:
        return f"paper:{self.p:g}"

    def lost(self, seed: int, k: int, inference: int, exchange: int, sender: int, receiver: int):
        """Whether the message sender -> receiver of (inference, exchange) is lost. The fragment
        is not part of any key, so every frame of the message shares the decision."""
        tag = b"paper%d" % k
        return (
            uniform(seed, tag + b"l", inference, exchange, sender, receiver) < self.p
            or uniform(seed, tag + b"r", inference, exchange, receiver) < self.p
            or uniform(seed, tag + b"s", inference, exchange, sender) < self.p
        )


@dataclass(frozen=True)
class GilbertElliott:
    p_gb: float
    p_bg: float
    loss_good: float
    loss_bad: float

    def __str__(self) -> str:
        return f"ge:{self.p_gb:g},{self.p_bg:g},{self.loss_good:g},{self.loss_bad:g}"

    @property
    def mean_loss(self) -> float:
        """Stationary loss rate."""
        total = self.p_gb + self.p_bg
        bad = self.p_gb / total if total > 0 else 0.0
        return bad * self.loss_bad + (1 - bad) * self.loss_good


@dataclass(frozen=True)
class Cut:
    a: frozenset[int]
    b: frozenset[int]
    when: When | None = None

    def separates(self, s: int, r: int) -> bool:
        return (s in self.a and r in self.b) or (s in self.b and r in self.a)

    def __str__(self) -> str:
        grp = lambda g: ",".join(str(n) for n in sorted(g))  # noqa: E731
        return f"cut:{grp(self.a)}/{grp(self.b)}" + (f"@{self.when}" if self.when else "")


@dataclass(frozen=True)
class Die:
    nodes: frozenset[int]
    when: When

    def __str__(self) -> str:
        return f"die:{','.join(str(n) for n in sorted(self.nodes))}@{self.when}"


Model = Iid | PaperLoss | GilbertElliott | Cut | Die


def _prob(text: str, what: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{what} must be a probability in [0, 1], not {text}")
    return v


def parse_one(text: str) -> Model | None:
    text = text.strip()
    if text in ("", "none"):
        return None
    kind, sep, args = text.partition(":")
    if not sep:
        raise ValueError(f"loss model {text!r} needs kind:args (iid:, paper:, ge:, cut:, die:)")
    if kind == "iid":
        return Iid(_prob(args, "iid loss"))
    if kind == "paper":
        return PaperLoss(_prob(args, "paper loss"))
    if kind == "ge":
        vals = args.split(",")
        if len(vals) != 4:
            raise ValueError(f"ge needs P_GB,P_BG,LOSS_G,LOSS_B, got {args!r}")
        names = ("P_GB", "P_BG", "LOSS_G", "LOSS_B")
        return GilbertElliott(*(_prob(v, n) for v, n in zip(vals, names, strict=True)))
    if kind == "cut":
        groups, _, when = args.partition("@")
        a, sep2, b = groups.partition("/")
        if not sep2:
            raise ValueError(f"cut needs two groups A/B, got {args!r}")
        ga, gb = parse_nodes(a), parse_nodes(b)
        if ga & gb:
            raise ValueError(f"cut groups overlap: {args!r}")
        return Cut(ga, gb, When.parse(when) if when else None)
    if kind == "die":
        nodes, sep2, when = args.partition("@")
        if not sep2:
            raise ValueError(f"die needs N@WHEN, got {args!r}")
        return Die(parse_nodes(nodes), When.parse(when))
    raise ValueError(f"unknown loss model {kind!r} (iid, paper, ge, cut, die)")


@dataclass
class LossModel:
    """The combination of models (any number of each kind) and the per-link chain state."""

    models: list[Model] = field(default_factory=list)
    seed: int = 0
    _ge_state: dict[tuple[int, int, int], bool] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, specs: str | list[str] | None, seed: int = 0) -> LossModel:
        if specs is None:
            specs = []
        if isinstance(specs, str):
            specs = [specs]
        models: list[Model] = []
        for spec in specs:
            for part in spec.replace(";", "+").split("+"):
                m = parse_one(part)
                if m is not None:
                    models.append(m)
        return cls(models, seed)

    def __str__(self) -> str:
        return "+".join(str(m) for m in self.models) or "none"

    @property
    def deaths(self) -> list[Die]:
        return [m for m in self.models if isinstance(m, Die)]

    @property
    def lossy(self) -> bool:
        return any(not isinstance(m, Die) for m in self.models)

    def lost(
        self,
        ordinal: int,
        inference: int,
        exchange: int,
        sender: int,
        fragment: int,
        receiver: int,
        elapsed_s: float = 0.0,
    ) -> str | None:
        """The cause if this (frame, receiver) delivery is lost, else None. Every model is
        evaluated (the Gilbert-Elliott chains advance whether or not another model already
        lost the frame), the first cause wins."""
        cause = None
        key = (inference, exchange, sender, fragment, receiver)
        for k, m in enumerate(self.models):
            if isinstance(m, Iid):
                if m.p > 0 and uniform(self.seed, b"iid%d" % k, *key) < m.p:
                    cause = cause or "iid"
            elif isinstance(m, PaperLoss):
                if m.p > 0 and m.lost(self.seed, k, inference, exchange, sender, receiver):
                    cause = cause or "paper"
            elif isinstance(m, GilbertElliott):
                link = (k, sender, receiver)
                bad = self._ge_state.get(link, False)
                u = uniform(self.seed, b"ge-t%d" % k, *key)
                bad = (u >= m.p_bg) if bad else (u < m.p_gb)
                self._ge_state[link] = bad
                p = m.loss_bad if bad else m.loss_good
                if p > 0 and uniform(self.seed, b"ge-l%d" % k, *key) < p:
                    cause = cause or "ge"
            elif isinstance(m, Cut) and m.separates(sender, receiver):
                when = m.when
                if (
                    when is None
                    or when.reached(ordinal, exchange)
                    or (when.t is not None and elapsed_s >= when.t)
                ):
                    cause = cause or "cut"
        return cause
