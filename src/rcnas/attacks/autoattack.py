"""AutoAttack (Croce & Hein, 2020) through pyautoattack 0.2.0, standard version by default.

pyautoattack is wrapped, not changed. The wrapper contains its side effects: it reseeds torch's
global RNG (restored here with `fork_rng`), its dynamic-defense check calls `sys.settrace(None)`
(the caller's tracer, e.g. coverage or a debugger, is restored) and counts into a module-global
dict that is never reset (reset here, so one model's result does not leak into the next), and it
logs to the global "auto-attack" logger (captured here: warnings land in `messages`).
"""
from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from rcnas.attacks.base import ATTACKS, Attack
from rcnas.errors import BadInput

log = logging.getLogger(__name__)

VERSIONS = ("standard", "plus", "rand")


class _Collect(logging.Handler):
    """Keeps pyautoattack's log records; with a progress bar, advances it as each sub-attack ends."""

    def __init__(self, bar=None) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.bar = bar

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.bar is not None:
            text = record.getMessage()
            if text.startswith("running "):
                self.bar.set_postfix_str(text[len("running "):])
            elif text.startswith("robust accuracy after "):
                self.bar.update(1)
                self.bar.set_postfix_str(text[len("robust accuracy after "):].split(" (")[0])


@contextlib.contextmanager
def _contained(device: torch.device) -> Iterator[None]:
    """Restore global RNG state, the trace function and the check counters around pyautoattack."""
    from pyautoattack import checks

    tracer = sys.gettrace()
    for k in checks.funcs:
        checks.funcs[k] = 0
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        sys.settrace(tracer)


@ATTACKS.register("aa")
class AutoAttack(Attack):
    """APGD-CE, APGD-T, FAB-T and Square with the authors' settings (`version="standard"`).

    It attacks only the points the model classifies correctly and returns the others unchanged.
    `messages` holds pyautoattack's own warnings (randomised/dynamic defense, zero gradients,
    Square stronger than the gradient attacks) from the last call.
    """

    kind = "aa"
    default_steps = 100

    def __init__(self, eps: float, *, norm: str = "Linf", version: str = "standard",
                 seed: int | None = 0) -> None:
        super().__init__(eps, norm=norm, seed=seed)
        if version not in VERSIONS:
            raise BadInput(f"unknown AutoAttack version {version!r}; use one of {', '.join(VERSIONS)}")
        self.version = version
        self.messages: tuple[str, ...] = ()
        self.progress = False  # a bar over the sub-attacks (APGD-CE, APGD-T, FAB-T, Square): each takes minutes on a CPU

    def __repr__(self) -> str:
        return (f"AutoAttack(name='aa', eps={self.eps:g}, norm={self.norm!r}, version={self.version!r}, "
                f"seed={self.seed})")

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        try:
            from pyautoattack import AutoAttack as _PyAutoAttack
        except ImportError:  # pragma: no cover - a pinned dependency
            raise BadInput("AutoAttack needs pyautoattack==0.2.0: pip install 'pyautoattack==0.2.0'") \
                from None
        if x.shape[0] == 0:
            self.messages = ()
            return x
        with torch.no_grad():
            n_classes = int(model(x[:1]).shape[1])
        if n_classes < 4 and self.version != "rand":
            raise BadInput(f"AutoAttack's targeted attacks need >= 4 classes, the model has {n_classes}; "
                           "use pgd or cw")

        global_logger = logging.getLogger("auto-attack")
        disabled = global_logger.disabled
        global_logger.disabled = True  # its constructor logs before we can redirect it
        try:
            adversary = _PyAutoAttack(model, eps=self.eps, norm=self.norm, seed=self.seed,
                                      version=self.version, device=x.device)
        finally:
            global_logger.disabled = disabled
        n_targets = min(9, n_classes - 1)
        adversary.apgd_targeted.n_target_classes = n_targets
        adversary.fab.n_target_classes = n_targets

        private = logging.Logger("pyautoattack", logging.DEBUG)  # noqa: LOG001 - kept out of the global hierarchy
        private.propagate = False
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=len(adversary.attacks_to_run), desc=f"aa ({len(x)} images)", unit="attack", leave=False)
        collect = _Collect(bar)
        private.addHandler(collect)
        adversary.logger = adversary.apgd.logger = adversary.apgd_targeted.logger = private

        try:
            with _contained(x.device):
                x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=x.shape[0])
        finally:
            if bar is not None:
                bar.close()

        messages: list[str] = []
        for record in collect.records:
            text = record.getMessage()
            log.debug("pyautoattack: %s", text)
            if record.levelno >= logging.WARNING and text not in messages:
                messages.append(text)
        self.messages = tuple(messages)
        return x_adv
