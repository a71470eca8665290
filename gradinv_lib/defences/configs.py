"""The defences' frozen configurations: one dataclass per named defence, a registry, and the
"name:key=value,..." text form the CLI and the notebooks use. What each one does to the client's
update is in :mod:`gradinv_lib.defences.apply`.

Each defence acts at one stage of the client's round, and a composition applies them in that order
whatever order it was written in: ``data`` (which images the client trains on: LargerBatch,
MixUp), ``step`` (how it computes its update: FedAvg, DPSGD; default FedSGD), ``update`` (what it
does to the update before sending it: GradientPruning), ``server`` (what the server sees:
SecureAggregation). At most one defence per stage.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from gradinv_lib.errors import InputError

STAGES = ("data", "step", "update", "server")


class Defence:
    """Base of every defence config: a registry name, a stage, provenance as a dict."""

    name: ClassVar[str]
    stage: ClassVar[str]

    def to_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}

    def parts(self) -> tuple["Defence", ...]:
        return (self,)

    def label(self) -> str:
        """Short text such as "prune:keep=0.1" (the CLI's form; parsed back by parse_defence)."""
        fields = ",".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items())
        return f"{self.name}:{fields}" if fields else self.name


def _floats(config, *names: str) -> None:
    """Store the named fields as floats (so "clip=1" and clip=1.0 give the same provenance)."""
    for n in names:
        value = getattr(config, n)
        if isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(config, n, float(value))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)


def _number(name: str, value, low: float, high: float = math.inf, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    good = (not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
            and math.isfinite(value) and low <= value <= high)
    _check(good, f"{name}: expected {kind} in [{low}, {high}], found {value!r}")


@dataclass(frozen=True)
class NoDefence(Defence):
    """The plain FedSGD client of the paper."""

    name: ClassVar[str] = "none"
    stage: ClassVar[str] = "step"


@dataclass(frozen=True)
class GradientPruning(Defence):
    """Keep the ``keep`` fraction of gradient entries largest in magnitude, zero the rest (Zhu et
    al.'s DLG defence). ``scope``: "tensor" keeps round(keep * n) entries (at least one) of every
    parameter tensor; "global" ranks all entries of the update together. BN statistics are
    shared unpruned."""

    name: ClassVar[str] = "prune"
    stage: ClassVar[str] = "update"
    keep: float = 0.1
    scope: str = "tensor"

    def __post_init__(self):
        _number("prune keep", self.keep, 0.0, 1.0)
        _check(self.keep > 0, f"prune keep: expected a fraction > 0, found {self.keep!r}")
        _check(self.scope in ("tensor", "global"), f"prune scope: expected 'tensor' or 'global', found {self.scope!r}")
        _floats(self, "keep")


@dataclass(frozen=True)
class DPSGD(Defence):
    """DP-SGD step (Abadi et al.) through Opacus: each image's gradient clipped to L2 norm
    ``clip``, summed, Gaussian noise N(0, (noise * clip)^2) added, divided by the batch size.
    epsilon is reported for ``delta`` after ``steps`` such steps at sampling rate
    ``sample_rate`` (Opacus' RDP accountant). BN runs frozen (running statistics): per-sample
    gradients need samples that do not see each other, and the batch's BN statistics are not
    privatised, so the client shares none."""

    name: ClassVar[str] = "dp"
    stage: ClassVar[str] = "step"
    clip: float = 1.0
    noise: float = 1.0
    delta: float = 1e-5
    sample_rate: float = 0.01
    steps: int = 1

    def __post_init__(self):
        _number("dp clip", self.clip, 0.0)
        _check(self.clip > 0, f"dp clip: expected a norm > 0, found {self.clip!r}")
        _number("dp noise", self.noise, 0.0)
        _number("dp delta", self.delta, 0.0, 1.0)
        _check(0 < self.delta < 1, f"dp delta: expected 0 < delta < 1, found {self.delta!r}")
        _number("dp sample_rate", self.sample_rate, 0.0, 1.0)
        _check(self.sample_rate > 0, f"dp sample_rate: expected a rate > 0, found {self.sample_rate!r}")
        _number("dp steps", self.steps, 1, integer=True)
        _floats(self, "clip", "noise", "delta", "sample_rate")


@dataclass(frozen=True)
class PrivateBN(Defence):
    """The parts of the DP client that act without clipping or noise (beyond the paper, to tell
    them apart from DP's noise): the client shares no BN statistics (the attack falls back to
    BN_approx, the running statistics), and with ``frozen`` its BN layers also normalise with the
    running statistics (eval mode), as the DP client's frozen BN does (:mod:`.dp`)."""

    name: ClassVar[str] = "private_bn"
    stage: ClassVar[str] = "step"
    frozen: bool = False

    def __post_init__(self):
        _check(isinstance(self.frozen, bool), f"private_bn frozen: expected true or false, found {self.frozen!r}")


@dataclass(frozen=True)
class FedAvg(Defence):
    """``local_steps`` SGD steps of rate ``lr`` over consecutive mini-batches of
    ``local_batch_size`` images (None: the whole batch) before sharing (w0 - wK) / lr
    (:func:`gradinv_lib.federated.client.simulate_client`); K = 1 over the whole batch is FedSGD."""

    name: ClassVar[str] = "fedavg"
    stage: ClassVar[str] = "step"
    local_steps: int = 4
    lr: float = 0.1
    local_batch_size: int | None = None

    def __post_init__(self):
        _number("fedavg local_steps", self.local_steps, 1, integer=True)
        _number("fedavg lr", self.lr, 0.0)
        _check(self.lr > 0, f"fedavg lr: expected a rate > 0, found {self.lr!r}")
        if self.local_batch_size is not None:
            _number("fedavg local_batch_size", self.local_batch_size, 1, integer=True)
        _floats(self, "lr")


@dataclass(frozen=True)
class LargerBatch(Defence):
    """The client trains on ``factor`` times as many images: its own and (factor - 1) * B more
    (the ``others`` of :func:`~gradinv_lib.defences.apply.defended_update`)."""

    name: ClassVar[str] = "larger_batch"
    stage: ClassVar[str] = "data"
    factor: int = 2

    def __post_init__(self):
        _number("larger_batch factor", self.factor, 1, integer=True)


@dataclass(frozen=True)
class MixUp(Defence):
    """MixUp of the client batch (Zhang et al.): image i becomes w x_i + (1 - w) x_pi(i) with
    the soft label w y_i + (1 - w) y_pi(i), pi a random derangement of the batch (seeded), and
    the update is the gradient of that soft-label cross-entropy. Departure from MixUp's
    w ~ Beta(a, a): ``weight`` is fixed, the sweep's strength (0.5: equal mixtures)."""

    name: ClassVar[str] = "mixup"
    stage: ClassVar[str] = "data"
    weight: float = 0.5

    def __post_init__(self):
        _number("mixup weight", self.weight, 0.5, 1.0)
        _floats(self, "weight")


@dataclass(frozen=True)
class SecureAggregation(Defence):
    """The server sees only the average of ``clients`` clients' updates (secure aggregation,
    Bonawitz et al., modelled by its output): gradients and BN statistics averaged, batch size
    summed. The average of the clients' means is the union's mean; the average of their
    variances misses the spread of their means, which the server cannot recover."""

    name: ClassVar[str] = "secure_aggregation"
    stage: ClassVar[str] = "server"
    clients: int = 2

    def __post_init__(self):
        _number("secure_aggregation clients", self.clients, 1, integer=True)


DEFENCES = {cls.name: cls for cls in (NoDefence, GradientPruning, DPSGD, PrivateBN, FedAvg, LargerBatch, MixUp,
                                      SecureAggregation)}


@dataclass(frozen=True)
class Compose(Defence):
    """Several defences at once, applied stage by stage (``STAGES``), one per stage at most."""

    name: ClassVar[str] = "compose"
    stage: ClassVar[str] = "compose"
    members: tuple = ()

    def __post_init__(self):
        flat = tuple(p for m in self.members for p in m.parts() if not isinstance(p, NoDefence))
        stages = [p.stage for p in flat]
        repeated = sorted({s for s in stages if stages.count(s) > 1})
        _check(not repeated, f"compose: expected at most one defence per stage, found several at {repeated}")
        object.__setattr__(self, "members", tuple(sorted(flat, key=lambda p: STAGES.index(p.stage))))

    def parts(self) -> tuple[Defence, ...]:
        return self.members or (NoDefence(),)

    def to_dict(self) -> dict:
        return {"name": self.name, "members": [m.to_dict() for m in self.members]}

    def label(self) -> str:
        return "+".join(m.label() for m in self.members) or "none"


def compose(*defences: Defence) -> Defence:
    """One defence from several (NoDefence parts dropped); a single one is returned as it is."""
    flat = Compose(tuple(defences)).parts()
    return flat[0] if len(flat) == 1 else Compose(flat)


def defence_from_dict(data: dict) -> Defence:
    """The inverse of ``to_dict`` (provenance read back from a results JSON)."""
    data = dict(data)
    name = data.pop("name", None)
    if name == "compose":
        return compose(*(defence_from_dict(m) for m in data.get("members", [])))
    _check(name in DEFENCES, f"defence: expected one of {', '.join(DEFENCES)}, found {name!r}")
    try:
        return DEFENCES[name](**data)
    except TypeError as exc:
        raise InputError(f"defence {name}: {exc}") from None


def _value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return None if text.lower() == "none" else text


def parse_defence(text: str) -> Defence:
    """"prune:keep=0.1" (or "prune" for the defaults, or "dp:clip=1,noise=0.5"); several joined
    by "+" compose: "mixup:weight=0.5+prune:keep=0.1"."""
    parts = []
    for piece in str(text).split("+"):
        name, _, fields = piece.strip().partition(":")
        settings = {}
        for item in filter(None, (f.strip() for f in fields.split(","))):
            key, eq, value = item.partition("=")
            _check(bool(eq and key), f"defence {name}: expected key=value settings, found {item!r}")
            settings[key.strip()] = _value(value.strip())
        parts.append(defence_from_dict({"name": name.strip(), **settings}))
    return compose(*parts)
