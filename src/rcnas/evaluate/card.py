"""`ModelCard`: one flat, fixed JSON record per evaluated model, in the spirit of RobustBench's
model_info files, so results from different runs and machines can be compared field by field.

The card only records numbers: parameters and MACs come from the caller (the cost module counts
them), accuracies from `evaluate_robustness`.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rcnas.attacks.base import NORMS, check_eps
from rcnas.errors import BadInput
from rcnas.evaluate.robustness import RobustnessResult
from rcnas.io import read_json, write_json

_ACCURACIES = ("clean_acc", "pgd20_acc", "cw40_acc", "aa_acc", "aa_only_acc", "worst_case_acc")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    from rcnas import __version__
    return __version__


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """Accuracies are fractions in [0,1]; None where that attack was not run.

    `aa_acc` is the per-sample worst case over AutoAttack and every other attack run (what to
    quote); `aa_only_acc` is AutoAttack's own number.
    """

    name: str
    dataset: str
    arch: dict[str, Any]
    threat_model: str = "Linf"
    eps: float
    clean_acc: float
    pgd20_acc: float | None = None
    cw40_acc: float | None = None
    aa_acc: float | None = None
    aa_only_acc: float | None = None
    worst_case_acc: float | None = None
    other_acc: dict[str, float] = field(default_factory=dict)
    """accuracy under every other attack that ran (fgsm, pgd7, cw10, ...), by its name"""
    training: dict[str, Any] = field(default_factory=dict)
    data_split: str = "test"
    n_eval: int
    aa_n_eval: int | None = None
    """images AutoAttack ran on, when fewer than n_eval (a stratified subset, to bound CPU time);
    aa_acc and aa_only_acc are then fractions of that subset"""
    params: int
    macs: int
    latency_ms_cpu: float | None = None
    latency_method: str = ""
    """how latency_ms_cpu was measured (threads, batch, warm-up, repeats), so numbers compare"""
    lipschitz: float | None = None
    warnings: tuple[str, ...] = ()
    eval_seconds: dict[str, float] = field(default_factory=dict)
    """seconds per attack when it ran (kept across resumed evaluations, unlike the call's total);
    `aa` includes the other attacks rerun on AutoAttack's subset for the worst case"""
    rcnas_version: str = field(default_factory=_version)
    created: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        if self.threat_model not in NORMS:
            raise BadInput(f"threat_model must be one of {', '.join(NORMS)}, got {self.threat_model!r}")
        check_eps(self.eps, self.threat_model)
        for name in _ACCURACIES:
            v = getattr(self, name)
            if v is None and name != "clean_acc":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise BadInput(f"model card {name} must be a fraction in [0,1], got {v!r}")
        for name in ("n_eval", "params", "macs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "n_eval" else 0):
                raise BadInput(f"model card {name} must be a whole number >= 0, got {v!r}")
        for name in ("latency_ms_cpu", "lipschitz"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not math.isfinite(v) or v < 0):
                raise BadInput(f"model card {name} must be a finite number >= 0 or null, got {v!r}")
        if not isinstance(self.other_acc, dict):
            raise BadInput("model card other_acc must be a mapping of attack name to accuracy")
        for k, v in self.other_acc.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise BadInput(f"model card other_acc[{str(k)[:40]!r}] must be a fraction in [0,1], got {v!r}")
        if not isinstance(self.arch, dict) or not isinstance(self.training, dict):
            raise BadInput("model card arch and training must be mappings")
        for k, v in self.eval_seconds.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise BadInput(f"model card eval_seconds[{k!r}] must be a finite number >= 0, got {v!r}")
        object.__setattr__(self, "warnings", tuple(str(w) for w in self.warnings))

    @classmethod
    def from_result(cls, result: RobustnessResult, *, name: str, dataset: str, arch: Any, eps: float,
                    params: int, macs: int, training: Mapping[str, Any] | None = None,
                    data_split: str = "test", threat_model: str = "Linf",
                    latency_ms_cpu: float | None = None, latency_method: str = "") -> ModelCard:
        """A card from an evaluation; `arch` is a mapping or has `to_dict()` (an `Arch`)."""
        arch_dict = arch.to_dict() if hasattr(arch, "to_dict") else dict(arch)
        acc = result.attacks
        columns = {"pgd20", "cw40", "aa", "aa_only"}
        return cls(name=name, dataset=dataset, arch=arch_dict, threat_model=threat_model, eps=eps,
                   clean_acc=result.clean, pgd20_acc=acc.get("pgd20"), cw40_acc=acc.get("cw40"),
                   aa_acc=acc.get("aa"), aa_only_acc=acc.get("aa_only"),
                   worst_case_acc=result.worst_case,
                   other_acc={k: v for k, v in acc.items() if k not in columns}, training=dict(training or {}),
                   data_split=data_split, n_eval=result.n, params=params, macs=macs,
                   latency_ms_cpu=latency_ms_cpu, latency_method=latency_method, lipschitz=result.lipschitz,
                   warnings=result.warnings,
                   eval_seconds=result.attack_seconds)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["warnings"] = list(self.warnings)
        return d

    def to_json(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str | Path) -> ModelCard:
        """Load a card; unknown or missing keys and out-of-range values are `BadInput`."""
        from rcnas.config import from_dict
        return from_dict(cls, read_json(path), where=str(path))

    def _aa_subset(self) -> str:
        return "" if self.aa_n_eval is None else f" (on a stratified subset of n={self.aa_n_eval})"

    def to_markdown(self) -> str:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{v:.2%}"

        eps255 = self.eps * 255
        eps_text = f"{self.eps:g}" + (f" ({eps255:.4g}/255)" if self.threat_model == "Linf" else "")
        rows = [
            ("dataset", f"{self.dataset} ({self.data_split}, n={self.n_eval})"),
            ("threat model", f"{self.threat_model}, eps = {eps_text}"),
            ("clean", pct(self.clean_acc)),
            ("PGD-20", pct(self.pgd20_acc)),
            ("CW-40", pct(self.cw40_acc)),
            ("AutoAttack (worst case with the others)", pct(self.aa_acc) + self._aa_subset()),
            ("AutoAttack alone", pct(self.aa_only_acc) + self._aa_subset()),
            *((name, pct(v)) for name, v in self.other_acc.items()),
            ("worst case over all attacks", pct(self.worst_case_acc)
             + (" (AutoAttack excluded: it ran on the subset)" if self.aa_n_eval else "")),
            ("params", f"{self.params:,} ({self.params / 1e6:.2f} M)"),
            ("MACs", f"{self.macs:,} ({self.macs / 1e6:.2f} M)"),
            ("CPU latency", "-" if self.latency_ms_cpu is None else f"{self.latency_ms_cpu:.3f} ms/image"
             + (f" ({self.latency_method})" if self.latency_method else "")),
            ("local Lipschitz", "-" if self.lipschitz is None else f"{self.lipschitz:.4g}"),
            ("evaluation time", ", ".join(f"{k} {v:.1f} s" for k, v in self.eval_seconds.items()) or "-"),
            ("training", ", ".join(f"{k}={v}" for k, v in self.training.items()) or "-"),
            ("architecture", ", ".join(f"{k}={v}" for k, v in self.arch.items()) or "-"),
            ("rcnas", f"{self.rcnas_version}, {self.created}"),
        ]
        lines = [f"### {self.name}", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
        if self.warnings:
            lines += ["", "Warnings:"] + [f"- {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"
