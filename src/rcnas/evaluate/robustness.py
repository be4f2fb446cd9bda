"""Robust accuracy under several attacks with per-sample bookkeeping, sanity checks and resume.

Every attack yields a per-sample "still correct" mask. A sample counts as robust to an attack only
if it is also correct on the clean input (the attacker may choose delta = 0), so each reported
accuracy is <= clean. The number reported under "aa" is the per-sample worst case over AutoAttack
and every other attack run (AutoAttack never gets to leave correct what PGD broke); "aa_only" keeps
AutoAttack's own number. Inconsistencies that usually mean a broken evaluation (an attack that
raises accuracy, a weaker attack beating a stronger one, zero input gradients) become `warnings`.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rcnas.attacks import Attack, lipschitz_ratios, make_attack
from rcnas.attacks.base import check_batch, frozen_eval
from rcnas.attacks.lipschitz import mean_ratio
from rcnas.device import resolve_device, torch_threads
from rcnas.errors import BadInput
from rcnas.io import atomic_write, read_json, write_json

log = logging.getLogger(__name__)

DEFAULT_ATTACKS = ("clean", "pgd20", "cw40", "aa")
# Above this fraction of samples with an all-zero input gradient, gradient attacks are blind.
GRAD_MASKING_FRACTION = 0.1
_STATE_VERSION = 1


@dataclass(frozen=True)
class RobustnessResult:
    """Accuracies in [0,1] on `n` samples; `attacks` is keyed by canonical name (pgd20, cw40, aa, aa_only)."""

    clean: float
    attacks: dict[str, float]
    worst_case: float
    n: int
    warnings: tuple[str, ...] = ()
    lipschitz: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def attack_seconds(self) -> dict[str, float]:
        """`seconds` without `total` (this call's wall time): each pass's time as it ran, resumes included."""
        return {k: v for k, v in self.seconds.items() if k != "total"}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        return d


@contextlib.contextmanager
def _on_device(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Run the model on `device`, then move it back (nn.Module.to works in place)."""
    first = next(model.parameters(), None)
    first = next(model.buffers(), None) if first is None else first
    before = first.device if first is not None else device
    if before != device:
        model.to(device)
    try:
        yield
    finally:
        if before != device:
            model.to(before)


def _fingerprint(model: nn.Module, x: Tensor, y: Tensor) -> str:
    """A hash of the weights and the data: a state_dir is only valid for the same model and data."""
    from rcnas.train.checkpoint import weights_digest
    h = hashlib.sha256()
    weights_digest(model, h)
    for t in (x, y):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class _Outcome:
    correct: Tensor  # bool (n,): prediction on the adversarial input is right
    ratios: Tensor  # float (n,): Lipschitz ratios (NaN: unperturbed), empty when not measured
    seconds: float
    messages: tuple[str, ...] = ()


class _State:
    """One finished attack = `<name>.pt` (masks) then `<name>.json` (written last: the commit)."""

    def __init__(self, directory: Path, fingerprint: str, n: int) -> None:
        self.dir = Path(directory)
        self.fingerprint = fingerprint
        self.n = n

    def load(self, attack: Attack) -> _Outcome | None:
        meta_path, mask_path = self.dir / f"{attack.name}.json", self.dir / f"{attack.name}.pt"
        if not meta_path.is_file():
            return None
        meta = read_json(meta_path)
        fix = f"use another state_dir or delete {meta_path} and {mask_path}"
        if not isinstance(meta, dict) or meta.get("version") != _STATE_VERSION:
            raise BadInput(f"{meta_path} is not an rcnas evaluation state; {fix}")
        if meta.get("fingerprint") != self.fingerprint or meta.get("attack") != repr(attack):
            raise BadInput(f"{meta_path} holds {attack.name} results for another model, data set or "
                           f"attack setting; {fix}")
        try:
            saved = torch.load(mask_path, map_location="cpu", weights_only=True)
            correct, ratios = saved["correct"], saved["ratios"]
        except Exception:  # noqa: BLE001 - whatever makes it unreadable, the fix is the same
            raise BadInput(f"{mask_path} is missing or unreadable; {fix}") from None
        if correct.dtype != torch.bool or tuple(correct.shape) != (self.n,):
            raise BadInput(f"{mask_path} does not hold {self.n} per-sample results; {fix}")
        log.info("%s: loaded from %s", attack.name, self.dir)
        return _Outcome(correct, ratios, float(meta["seconds"]), tuple(meta.get("messages", ())))

    def save(self, attack: Attack, out: _Outcome) -> None:
        atomic_write(self.dir / f"{attack.name}.pt",
                     lambda p: torch.save({"correct": out.correct, "ratios": out.ratios}, p))
        write_json(self.dir / f"{attack.name}.json", {
            "version": _STATE_VERSION, "attack": repr(attack), "fingerprint": self.fingerprint,
            "n": self.n, "seconds": out.seconds, "messages": list(out.messages)})


def _batches(n: int, batch_size: int, desc: str, progress: bool) -> Iterator[slice]:
    starts = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc=desc, leave=False)
    for i in starts:
        yield slice(i, min(i + batch_size, n))


def _clean_pass(model: nn.Module, x: Tensor, y: Tensor, device: torch.device, batch_size: int,
                progress: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Clean logits, correctness, and whether each sample's input gradient (of the CE) is all zero."""
    logits, zero_grad = [], []
    for s in _batches(len(x), batch_size, "clean", progress):
        xb = x[s].to(device).requires_grad_(True)
        with torch.enable_grad():
            out = model(xb)
            loss = F.cross_entropy(out.float(), y[s].to(device), reduction="sum")
        grad = torch.autograd.grad(loss, xb, allow_unused=True)[0] if loss.requires_grad else None
        zero = torch.ones(len(xb), dtype=torch.bool) if grad is None else \
            (grad.detach().flatten(1) == 0).all(dim=1).cpu()
        logits.append(out.detach().float().cpu())
        zero_grad.append(zero)
    clean_logits = torch.cat(logits)
    return clean_logits, clean_logits.argmax(dim=1) == y.cpu(), torch.cat(zero_grad)


def _run(model: nn.Module, attack: Attack, x: Tensor, y: Tensor, clean_logits: Tensor,
         device: torch.device, batch_size: int, progress: bool) -> _Outcome:
    start = time.perf_counter()
    measure = attack.kind in ("fgsm", "pgd", "cw")
    correct, ratios, messages = [], [], []
    if attack.kind == "aa":
        attack.progress = progress  # AutoAttack's own bar moves per sub-attack, not per (one, long) batch
    for s in _batches(len(x), batch_size, attack.name, progress):
        xb, yb = x[s].to(device), y[s].to(device)
        x_adv = attack(model, xb, yb)
        with torch.no_grad():
            out = model(x_adv).float()
        correct.append((out.argmax(dim=1) == yb).cpu())
        if measure:
            ratios.append(lipschitz_ratios(clean_logits[s], out.cpu(), xb.cpu(), x_adv.cpu()))
        messages.extend(m for m in getattr(attack, "messages", ()) if m not in messages)
    return _Outcome(torch.cat(correct), torch.cat(ratios) if ratios else torch.empty(0),
                    time.perf_counter() - start, tuple(messages))


def _sanity_warnings(clean: Tensor, raw: dict[str, Tensor], kinds: dict[str, str], n: int,
                     zero_grad: Tensor) -> list[str]:
    out = []
    clean_acc = float(clean.float().mean())
    for name, c in raw.items():
        acc = float(c.float().mean())
        if acc > clean_acc:
            out.append(f"{name}: accuracy on adversarial inputs ({acc:.2%}) is above clean accuracy "
                       f"({clean_acc:.2%}): the attack is broken or the model is randomised")
    robust = {name: float((clean & c).float().mean()) for name, c in raw.items()}
    fgsm = robust.get("fgsm")
    for name, acc in robust.items():
        if kinds[name] == "pgd" and fgsm is not None and acc > fgsm:
            out.append(f"{name} ({acc:.2%}) is weaker than fgsm ({fgsm:.2%}): a sign of gradient "
                       "masking or a broken attack; check step size and steps")
        if kinds[name] in ("pgd", "cw") and "aa" in robust and robust["aa"] > acc + 1.0 / n:
            out.append(f"AutoAttack alone ({robust['aa']:.2%}) is weaker than {name} ({acc:.2%}): "
                       "the AutoAttack run is unreliable; check the model's outputs are logits")
    frac = float(zero_grad.float().mean())
    if frac > GRAD_MASKING_FRACTION:
        out.append(f"{frac:.0%} of samples have an all-zero input gradient: gradient masking "
                   "(non-differentiable or saturated model); gradient attacks overestimate robustness")
    return out


def evaluate_robustness(model: nn.Module, x: Tensor, y: Tensor, *,
                        attacks: Sequence[str] = DEFAULT_ATTACKS, eps: float, batch_size: int = 256,
                        seed: int = 0, device: str | torch.device = "cpu", progress: bool = False,
                        state_dir: Path | str | None = None) -> RobustnessResult:
    """Clean and robust accuracy of `model` on images `x` in [0,1] with labels `y`.

    With `state_dir`, each finished attack's per-sample results are saved atomically and a rerun
    skips it (results must come from the same weights, data and attack settings). The model is
    left as found: same mode, same weights and buffers, no `.grad`, same device.
    """
    x, y = check_batch(x, y)
    x, y = x.cpu(), y.cpu()
    if x.is_inference() or y.is_inference():  # created under inference_mode: unusable by autograd
        with torch.inference_mode(False):
            x, y = x.clone(), y.clone()
    n = len(x)
    if n == 0:
        raise BadInput("no samples to evaluate; pass at least one image")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInput(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(attacks, str):
        attacks = (attacks,)
    built = [make_attack(a, eps, seed=seed) for a in attacks]
    names = [a.name for a in built]
    dupes = sorted({nm for nm in names if names.count(nm) > 1})
    if dupes:
        raise BadInput(f"attack {dupes[0]!r} is listed twice in {list(attacks)}; list each attack once")
    if "aa_only" in names:
        raise BadInput("'aa_only' is a reported key, not an attack; use 'aa'")
    built = [a for a in built if a.kind != "clean"]
    dev = resolve_device(device)
    total = time.perf_counter()

    state = None
    with _on_device(model, dev), frozen_eval(model):
        if state_dir is not None:
            state = _State(Path(state_dir), _fingerprint(model, x, y), n)
        t = time.perf_counter()
        clean_logits, clean, zero_grad = _clean_pass(model, x, y, dev, batch_size, progress)
        seconds = {"clean": time.perf_counter() - t}
        log.info("clean: %.2f%% (%d samples)", 100 * float(clean.float().mean()), n)
        outcomes: dict[str, _Outcome] = {}
        for attack in built:
            out = state.load(attack) if state is not None else None
            if out is None:
                out = _run(model, attack, x, y, clean_logits, dev, batch_size, progress)
                if state is not None:
                    state.save(attack, out)
            outcomes[attack.name] = out
            seconds[attack.name] = out.seconds
            log.info("%s: %.2f%% (%.1f s)", attack.name,
                     100 * float((clean & out.correct).float().mean()), out.seconds)

    raw = {name: o.correct for name, o in outcomes.items()}
    kinds = {a.name: a.kind for a in built}
    worst = clean.clone()
    for c in raw.values():
        worst &= c
    accs: dict[str, float] = {}
    for name, c in raw.items():
        if name == "aa":
            accs["aa"] = float(worst.float().mean())
            accs["aa_only"] = float((clean & c).float().mean())
        else:
            accs[name] = float((clean & c).float().mean())

    warnings = _sanity_warnings(clean, raw, kinds, n, zero_grad)
    for name, o in outcomes.items():
        warnings.extend(f"{name}: pyautoattack: {m}" for m in o.messages)
    for w in warnings:
        log.warning("%s", w)

    lips = None
    for kind in ("pgd", "cw", "fgsm"):
        chosen = [a.name for a in built if a.kind == kind]
        if chosen:
            lips = mean_ratio(outcomes[chosen[0]].ratios)
            break
    seconds["total"] = time.perf_counter() - total
    return RobustnessResult(clean=float(clean.float().mean()), attacks=accs,
                            worst_case=float(worst.float().mean()), n=n, warnings=tuple(warnings),
                            lipschitz=lips, seconds=seconds)


def measure_latency(model: nn.Module, input_shape: Sequence[int], device: str | torch.device = "cpu",
                    batch_size: int = 1, repeats: int = 50, warmup: int = 5, threads: int | None = 1) -> float:
    """Seconds per image: median over `repeats` timed forward passes of one batch, after `warmup`.

    `input_shape` is one image's shape, e.g. (3, 32, 32). The median resists the outliers of a
    shared machine, and on the CPU the thread count is fixed (`threads`, restored afterwards;
    None leaves it as the caller set it), since intra-op threads fighting other work are what
    made a small network read slower than a big one.
    """
    shape = tuple(input_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise BadInput(f"input_shape must be positive integers, e.g. (3, 32, 32), got {input_shape!r}")
    for label, v, lo in (("batch_size", batch_size, 1), ("repeats", repeats, 1), ("warmup", warmup, 0),
                         ("threads", 1 if threads is None else threads, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise BadInput(f"{label} must be an integer >= {lo}, got {v!r}")
    dev = resolve_device(device)
    x = torch.rand((batch_size, *shape), generator=torch.Generator().manual_seed(0)).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    pinned = threads if threads is not None and dev.type == "cpu" else torch.get_num_threads()
    times = []
    with torch_threads(pinned), _on_device(model, dev), frozen_eval(model), torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            t = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return statistics.median(times) / batch_size


def latency_method(batch_size: int = 1, repeats: int = 50, warmup: int = 5, threads: int | None = 1) -> str:
    """How `measure_latency` measured, in words for a model card."""
    return (f"median of {repeats} forward passes of batch {batch_size} after {warmup} warm-up, "
            + (f"{threads} CPU thread{'s' if threads != 1 else ''}" if threads else "the process's threads"))


__all__ = ["DEFAULT_ATTACKS", "GRAD_MASKING_FRACTION", "RobustnessResult", "evaluate_robustness",
           "latency_method", "measure_latency"]
