"""`TrainConfig`: every knob of (adversarial) training, one documented field each."""
from __future__ import annotations

from dataclasses import dataclass

from rcnas.errors import BadInput

ADVERSARIAL_RECIPES = ("pgd", "trades", "fgsm-rs", "n-fgsm")
FAST_RECIPES = ("fgsm-rs", "n-fgsm")  # one-step attacks: prone to catastrophic overfitting
RECIPE_NAMES = ("standard", *ADVERSARIAL_RECIPES)
SCHEDULES = ("multistep", "cosine", "onecycle", "constant")
SELECT_BY = ("val_robust", "val_clean", "last")


@dataclass(frozen=True)
class TrainConfig:
    recipe: str = "pgd"
    """standard (no attack: the non-robust teacher), pgd (Madry PGD-AT), trades, fgsm-rs (Wong et al.
    2020), n-fgsm (de Jorge et al. 2022)"""
    epochs: int = 10
    """number of passes over the training split"""
    batch_size: int = 128
    """training mini-batch size"""
    lr: float = 0.1
    """peak SGD learning rate"""
    momentum: float = 0.9
    """SGD momentum"""
    weight_decay: float = 2e-4
    """L2 weight decay on all parameters (as Madry / Rice et al.)"""
    nesterov: bool = False
    """Nesterov momentum"""
    schedule: str = "multistep"
    """learning-rate shape over training: multistep (x0.1 at each milestone), cosine, onecycle
    (linear 0 -> lr at 40% -> 0, the fast-AT cyclic schedule) or constant"""
    milestones: tuple[float, ...] = (0.75, 0.9)
    """multistep drop points as fractions of the total training (paper: 75% and 90% of epochs)"""
    eps: float | None = None
    """Linf training radius in [0,1] pixel units; None -> the dataset's default_eps"""
    attack_steps: int = 10
    """PGD steps of the training attack (pgd, trades); the fast recipes always take one step"""
    step_size: float | None = None
    """attack step; None -> 2.5*eps/attack_steps (pgd, trades), 1.25*eps (fgsm-rs), eps (n-fgsm)"""
    trades_beta: float = 6.0
    """TRADES robustness weight (clean CE + beta * KL(adv || clean))"""
    bf16: bool = False
    """bfloat16 autocast around the training forward pass only (loss, backward, step and attacks in fp32)"""
    channels_last: bool = False
    """NHWC memory format for model and inputs (faster convolutions on recent GPUs/CPUs)"""
    compile: bool = False
    """torch.compile the model's forward (does not change results: ignored when matching checkpoints)"""
    ema: float | None = None
    """weight EMA decay (e.g. 0.999); when set, validation, selection and the returned model use EMA
    weights. The decay is warmed up as min(ema, (1+n)/(10+n)) so short runs are not stuck at init."""
    select_by: str = "val_robust"
    """which epoch's weights to keep: val_robust (robust overfitting is real; a standard recipe ranks
    by val_clean instead, its robust accuracy is ~0 noise), val_clean, or last"""
    val_attack: str = "pgd10"
    """attack (rcnas.attacks.make_attack name) for the per-epoch validation robust accuracy"""
    val_samples: int = 512
    """validation images attacked per epoch (the first ones of the val split; clean uses all of it)"""
    guard: bool = True
    """fast recipes: if val robust accuracy collapses (catastrophic overfitting), restore the best
    epoch and continue with the pgd recipe"""
    grad_clip: float | None = None
    """max global gradient norm; None disables clipping"""
    label_smoothing: float = 0.0
    """label smoothing of the training cross-entropy (never of the attack's loss)"""
    warmup_epochs: float = 0.0
    """linear learning-rate warm-up length in epochs (multiplies the schedule)"""
    seed: int = 0
    """seeds shuffling, augmentation, attack starts and dropout (per epoch: resumable)"""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N (ignored when matching checkpoints)"""

    def __post_init__(self) -> None:
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise BadInput(msg)

        check(self.recipe in RECIPE_NAMES,
              f"unknown recipe {self.recipe!r}; use one of {', '.join(RECIPE_NAMES)}")
        check(self.schedule in SCHEDULES,
              f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        check(self.select_by in SELECT_BY,
              f"unknown select_by {self.select_by!r}; use one of {', '.join(SELECT_BY)}")
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.momentum >= 0, f"momentum must be >= 0, got {self.momentum}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(all(0 < m < 1 for m in self.milestones) and list(self.milestones) == sorted(self.milestones),
              f"milestones must be increasing fractions in (0, 1), got {list(self.milestones)}")
        check(self.eps is None or 0 < self.eps <= 1,
              f"eps must be in (0, 1] (pixel units, e.g. 8/255 = 0.0314), got {self.eps}")
        check(self.attack_steps >= 1, f"attack_steps must be >= 1, got {self.attack_steps}")
        check(self.step_size is None or self.step_size > 0, f"step_size must be > 0, got {self.step_size}")
        check(self.trades_beta >= 0, f"trades_beta must be >= 0, got {self.trades_beta}")
        check(self.ema is None or 0 < self.ema < 1,
              f"ema must be a decay in (0, 1), e.g. 0.999, got {self.ema}")
        check(self.val_samples >= 1, f"val_samples must be >= 1, got {self.val_samples}")
        check(self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}")
        check(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        check(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        check(self.nesterov is False or self.momentum > 0, "nesterov needs momentum > 0")
        check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")

    @property
    def adversarial(self) -> bool:
        return self.recipe in ADVERSARIAL_RECIPES

    def resolve_eps(self, default_eps: float) -> float:
        """The training radius: `eps`, or the dataset default when unset."""
        return float(self.eps if self.eps is not None else default_eps)

    def resolve_step_size(self, eps: float, recipe: str | None = None) -> float:
        """The attack step for `recipe` (default: this config's) at radius `eps`."""
        recipe = recipe or self.recipe
        if self.step_size is not None and recipe == self.recipe:  # a guard fallback to pgd uses pgd's own
            return float(self.step_size)
        if recipe == "fgsm-rs":
            return 1.25 * eps  # Wong et al. 2020
        if recipe == "n-fgsm":
            return eps  # de Jorge et al. 2022
        return 2.5 * eps / self.attack_steps  # Madry et al. 2018
