"""Learning-rate schedule of the attack (sec. 4): linear warm-up, then cosine decay to zero."""

import math


def cosine_with_warmup(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Learning rate at 0-based ``step`` of ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
