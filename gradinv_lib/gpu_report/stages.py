"""What ``gradinv gpu-report`` runs, in priority order: the trained CIFAR-10 CNN at batch 8 with 8
seeds and registered consensus (eqs. 1-12) for thousands of iterations, the pretrained
EfficientNet-Lite0 at 224 px at batch 1 and 8, and the bench at the paper's setting with the
loop's profile. Every stage's model and size is a parameter (``--stage NAME:key=value,...``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.errors import InputError


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``kind`` "attack" (an inversion, resumable) or "bench" (timing and profile).

    ``max_iterations``/``min_iterations``: what an attack stage wants and the least that is worth
    running (fewer: the stage is skipped); ``share``: the largest fraction of the call's time it
    may take. Lower ``priority`` numbers get their time first. ``profile``: the run profile whose
    attack setting (distance, weights, lr, warm-up) an attack stage takes ("": the balanced
    defaults); the plan sets its length, seeds and schedules."""

    name: str
    kind: str
    priority: int
    model: str
    weights: str
    dataset: str
    resolution: int
    batch: int
    seeds: int
    max_iterations: int = 20_000
    min_iterations: int = 100
    share: float = 1.0
    profile: str = ""

    def __post_init__(self):
        if self.kind not in ("attack", "bench"):
            raise InputError(f"stage {self.name}: kind must be attack or bench, found {self.kind!r}")
        for key in ("priority", "resolution", "batch", "seeds", "max_iterations", "min_iterations"):
            if getattr(self, key) < 1:
                raise InputError(f"stage {self.name}: {key} must be >= 1, found {getattr(self, key)}")
        if self.min_iterations > self.max_iterations or not 0 < self.share <= 1:
            raise InputError(f"stage {self.name}: expected min_iterations <= max_iterations and share "
                             f"in (0, 1], found {self.min_iterations}, {self.max_iterations}, {self.share}")

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_STAGES = (
    # 1. the trained network at its own resolution: what the CPU budget cannot show
    StageSpec("cnn", "attack", 1, "cifar10_cnn", "default", "cifar10", 32, 8, 8,
              max_iterations=6000, min_iterations=1000, share=0.5, profile="gpu_cifar10"),
    # 2. the pretrained ImageNet network at 224 px; one seed each, so that the minutes left buy
    #    hundreds of iterations rather than tens (8 seeds cost 8x an iteration)
    StageSpec("lite0_b1", "attack", 2, "efficientnet_lite0", "default", "pool", 224, 1, 1),
    StageSpec("lite0_b8", "attack", 2, "efficientnet_lite0", "default", "pool", 224, 8, 1),
    # 3. the bench at the paper's setting (ResNet-50, 224 px, batch 8, 8 seeds) with the profile
    StageSpec("bench", "bench", 3, "resnet50", "random", "pool", 224, 8, 8),
)


def parse_stage_overrides(texts: list[str], stages=DEFAULT_STAGES) -> tuple[StageSpec, ...]:
    """Apply ``NAME:key=value,...`` overrides (``NAME:off`` drops the stage) to ``stages``."""
    by_name = {s.name: s for s in stages}
    types = {f.name: f.type for f in fields(StageSpec)}
    for text in texts:
        name, _, body = text.partition(":")
        if name not in by_name:
            raise InputError(f"--stage {text!r}: expected a stage name among {', '.join(by_name)}, found {name!r}")
        if body == "off":
            by_name[name] = None
            continue
        changes = {}
        for item in filter(None, body.split(",")):
            key, eq, value = item.partition("=")
            if not eq or key not in types or key in ("name", "kind"):
                raise InputError(f"--stage {text!r}: expected key=value with a key among "
                                 f"{', '.join(k for k in types if k not in ('name', 'kind'))}, found {item!r}")
            cast = {"int": int, "float": float}.get(str(types[key]), str)
            try:
                changes[key] = cast(value)
            except ValueError:
                raise InputError(f"--stage {text!r}: {key} expects a {cast.__name__}, found {value!r}") from None
        if by_name[name] is None:
            raise InputError(f"--stage {text!r}: stage {name} was switched off")
        by_name[name] = replace(by_name[name], **changes)
    return tuple(s for s in by_name.values() if s is not None)


def attack_config(spec: StageSpec, iterations: int, every: int, amp: bool, seed: int) -> InversionConfig:
    """The stage's attack: the full method (eqs. 1-12) in the setting of ``spec.profile`` (else
    the balanced defaults, warm-up min(50, 5%) iterations) for ``iterations``, registered
    consensus with several seeds, checkpoints and progress every ``every`` iterations;
    registration every min(100, 2.5%) iterations after the first quarter (the paper: 100 of 20K
    after 5K)."""
    from gradinv_lib.profiles import get_profile
    base = (get_profile(spec.profile).config if spec.profile
            else InversionConfig(warmup=min(50, max(1, iterations // 20))))
    return base.replace(
        iterations=iterations, seeds=spec.seeds, group="registered" if spec.seeds > 1 else "none",
        register_every=min(100, max(1, iterations // 40)), amp=amp, seed=seed, log_every=every,
        checkpoint_every=every)
