"""rcnas.train: recipes learn on real data (sklearn digits), bf16 trains, resume is exact, the
catastrophic-overfitting guard fires on a collapse and only then, checkpoints fail loudly."""
from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from rcnas.attacks import make_attack
from rcnas.config import from_dict, to_dict
from rcnas.data import Split, Splits, load_dataset
from rcnas.errors import BadInput
from rcnas.train import RECIPES, TrainConfig, accuracy, fit, guard_trips, load_weights, lr_at
from rcnas.train import loop as train_loop

EPS = 0.15  # the digits default


def tiny_cnn(seed: int = 0, width: int = 16) -> nn.Module:
    """~20k parameters, 8x8 grey inputs in [0, 1]."""
    torch.manual_seed(seed)  # model init is the caller's business; fit never touches global RNG
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.Flatten(), nn.Linear(2 * width * 16, 10))


# Small but real: batch 64 (~15 steps/epoch), validation on 128 images with PGD-10.
FAST = {"batch_size": 64, "lr": 0.05, "val_samples": 128}


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_dataset("digits")


def robust_acc(model: nn.Module, split, eps: float = EPS) -> float:
    return accuracy(model, split, attack=make_attack("pgd10", eps))


@pytest.fixture(scope="module")
def standard_model(digits: Splits) -> tuple[nn.Module, object]:
    model = tiny_cnn()
    res = fit(model, digits.train, digits.val, TrainConfig(recipe="standard", epochs=8, **FAST),
              info=digits.info, progress=False)
    return model, res


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def numbers(history: list[dict]) -> list[dict]:
    """History without wall-clock entries (everything else must be reproducible)."""
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in history]


# ---------------------------------------------------------------- config and schedule

def test_config_round_trips_and_validates() -> None:
    cfg = TrainConfig(recipe="trades", milestones=(0.5, 0.8), eps=0.1, ema=0.999, step_size=None)
    d = to_dict(cfg)
    assert d["milestones"] == [0.5, 0.8]
    assert from_dict(TrainConfig, d) == cfg
    assert to_dict(from_dict(TrainConfig, d)) == d
    assert from_dict(TrainConfig, to_dict(TrainConfig())) == TrainConfig()
    for bad in ({"recipe": "madry"}, {"schedule": "linear"}, {"ema": 1.5}, {"eps": 8},
                {"milestones": (0.9, 0.5)}, {"select_by": "val"}):
        with pytest.raises(BadInput):
            TrainConfig(**bad)
    with pytest.raises(BadInput, match="did you mean 'epochs'"):
        from_dict(TrainConfig, {"epoch": 3})


def test_step_sizes_follow_the_papers() -> None:
    assert TrainConfig(recipe="pgd", attack_steps=10).resolve_step_size(0.1) == pytest.approx(0.025)
    assert TrainConfig(recipe="fgsm-rs").resolve_step_size(0.1) == pytest.approx(0.125)
    assert TrainConfig(recipe="n-fgsm").resolve_step_size(0.1) == pytest.approx(0.1)
    # an explicit step is the fast recipe's; the guard's pgd fallback keeps pgd's own
    cfg = TrainConfig(recipe="fgsm-rs", step_size=0.3, attack_steps=10)
    assert cfg.resolve_step_size(0.1) == 0.3 and cfg.resolve_step_size(0.1, "pgd") == pytest.approx(0.025)
    assert TrainConfig(eps=None).resolve_eps(0.15) == 0.15 and TrainConfig(eps=0.1).resolve_eps(0.15) == 0.1


def test_schedule_shapes() -> None:
    cfg = TrainConfig(epochs=100, lr=0.1)
    lrs = [lr_at(cfg, e, 1) for e in range(100)]
    assert lrs[0] == lrs[74] == 0.1
    assert lrs[75] == lrs[89] == pytest.approx(0.01)  # x0.1 at 75% of the epochs
    assert lrs[90] == lrs[99] == pytest.approx(0.001)  # and again at 90%
    cos = [lr_at(dataclasses.replace(cfg, schedule="cosine"), s, 10) for s in range(1000)]
    assert cos[0] == 0.1 and cos[500] == pytest.approx(0.05) and all(a >= b for a, b in itertools.pairwise(cos))
    one = [lr_at(dataclasses.replace(cfg, schedule="onecycle"), s, 10) for s in range(1000)]
    peak = max(range(1000), key=one.__getitem__)
    assert 390 <= peak <= 410 and one[peak] == pytest.approx(0.1, rel=0.01) and 0 < one[0] < 0.001
    assert 0 < one[-1] < 0.001
    assert {lr_at(dataclasses.replace(cfg, schedule="constant"), s, 10) for s in range(1000)} == {0.1}
    warm = dataclasses.replace(cfg, schedule="constant", warmup_epochs=2)
    assert [lr_at(warm, s, 10) for s in (0, 9, 19, 20)] == pytest.approx([0.005, 0.05, 0.1, 0.1])


def test_guard_rule() -> None:
    assert guard_trips(best_robust=0.5, robust=0.1, clean=0.9)       # < 30% of the best
    assert guard_trips(best_robust=0.06, robust=0.01, clean=0.9)     # ~0 while clean is high
    assert not guard_trips(best_robust=0.5, robust=0.4, clean=0.9)   # ordinary noise
    assert not guard_trips(best_robust=0.03, robust=0.0, clean=0.9)  # nothing to collapse from yet


# ---------------------------------------------------------------- recipes learn

def test_standard_training_reaches_90_percent(digits: Splits, standard_model) -> None:
    model, res = standard_model
    assert accuracy(model, digits.test) > 0.90
    assert res.epochs_run == 8 and len(res.history) == 8 and not res.guard_tripped
    row = res.history[-1]
    for key in ("losses/train", "charts/lr", "eval/val_clean", "time/epoch_s", "time/img_per_s"):
        assert math.isfinite(row[key]), key
    assert row["eval/val_robust"] is None  # a standard model is not attacked every epoch (pure cost)
    assert res.history[0]["losses/train"] > res.history[-1]["losses/train"]
    # the returned weights are the selected epoch's (standard: ranked by clean accuracy)
    assert res.val_clean == pytest.approx(accuracy(model, digits.val))
    assert res.val_clean == max(r["eval/val_clean"] for r in res.history)


def test_pgd_training_beats_standard_under_attack(digits: Splits, standard_model) -> None:
    std_model, _ = standard_model
    model = tiny_cnn()
    res = fit(model, digits.train, digits.val, TrainConfig(recipe="pgd", epochs=8, attack_steps=3, **FAST),
              info=digits.info, progress=False)
    std_rob, pgd_rob = robust_acc(std_model, digits.test), robust_acc(model, digits.test)
    assert pgd_rob > std_rob + 0.3, (pgd_rob, std_rob)  # measured: ~0.55 vs ~0.01
    assert accuracy(model, digits.test) > 0.6
    assert res.val_robust == max(r["eval/val_robust"] for r in res.history)  # best epoch by val robust


@pytest.mark.parametrize("recipe", ["trades", "fgsm-rs", "n-fgsm"])
def test_other_recipes_learn_robustness(digits: Splits, recipe: str) -> None:
    model = tiny_cnn()
    cfg = TrainConfig(recipe=recipe, epochs=6, attack_steps=3, **FAST)
    res = fit(model, digits.train, digits.val, cfg, info=digits.info, progress=False)
    rob = robust_acc(model, digits.test)
    assert rob > 0.3, rob  # chance is 0.10; measured 0.44-0.58 over seeds
    assert accuracy(model, digits.test) > 0.6
    assert not res.guard_tripped  # a normal run never trips the guard


def test_bf16_autocast_run_learns(digits: Splits) -> None:
    """The trap: CPU bf16 autocast around backward/step trained a chance-level net."""
    model = tiny_cnn()
    res = fit(model, digits.train, digits.val, TrainConfig(recipe="standard", epochs=6, bf16=True, **FAST),
              info=digits.info, progress=False)
    assert accuracy(model, digits.test) > 0.80
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    assert res.history[-1]["losses/train"] < 1.0


def test_channels_last_bf16_adversarial_step_runs(digits: Splits) -> None:
    model = tiny_cnn()
    cfg = TrainConfig(recipe="pgd", epochs=2, attack_steps=2, bf16=True, channels_last=True, **FAST)
    res = fit(model, digits.train, digits.val, cfg, info=digits.info, progress=False)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert res.val_clean > 0.3 and math.isfinite(res.history[-1]["losses/train"])


def test_recipes_registry_and_modes() -> None:
    assert set(RECIPES.names()) == {"standard", "pgd", "trades", "fgsm-rs", "n-fgsm"}
    model, cfg = tiny_cnn(), TrainConfig(recipe="pgd", attack_steps=2)
    bn_mean = model[1].running_mean.clone()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    model.train()
    for name in RECIPES:
        loss = RECIPES.get(name)(model, x, y, cfg, EPS, torch.Generator().manual_seed(0))
        assert loss.dim() == 0 and loss.dtype == torch.float32 and loss.requires_grad
        assert model.training  # attacks ran in eval mode, then back to train mode
        assert all(p.grad is None for p in model.parameters())  # attacks take input gradients only
    assert not torch.equal(model[1].running_mean, bn_mean)  # the training forward did update BN


# ---------------------------------------------------------------- EMA

def test_ema_weights_differ_and_are_evaluated(digits: Splits, tmp_path: Path) -> None:
    model = tiny_cnn()
    cfg = TrainConfig(recipe="pgd", attack_steps=2, epochs=3, ema=0.99, select_by="last", **FAST)
    res = fit(model, digits.train, digits.val, cfg, info=digits.info, out_dir=tmp_path, progress=False)
    raw, ema = tiny_cnn(), tiny_cnn()
    load_weights(ema, tmp_path / "last.safetensors")  # inference weights = EMA
    from safetensors.torch import load_file
    raw.load_state_dict({k[len("train::"):]: v for k, v in load_file(tmp_path / "last.safetensors").items()
                         if k.startswith("train::")})
    assert not torch.equal(raw[0].weight, ema[0].weight)
    assert state_equal(model, ema)  # fit returns the EMA weights
    assert res.val_clean == accuracy(ema, digits.val)  # ... and validated them, not the raw ones
    first = Split(digits.val.x[:128], digits.val.y[:128])  # val_samples
    assert res.val_robust == robust_acc(ema, first)


# ---------------------------------------------------------------- checkpoints and resume

RESUME_CFG = TrainConfig(recipe="fgsm-rs", epochs=4, ema=0.9, **FAST)  # augment + attack noise + EMA


class Interrupt(Exception):
    pass


def test_resume_after_interruption_is_exact(digits: Splits, tmp_path: Path) -> None:
    straight = tiny_cnn()
    res_a = fit(straight, digits.train, digits.val, RESUME_CFG, info=digits.info, progress=False)

    def kill_after_epoch_2(row: dict) -> None:
        if row["epoch"] == 2:
            raise Interrupt  # the checkpoint of epoch 2 is on disk: like a kill right after it

    with pytest.raises(Interrupt):
        fit(tiny_cnn(), digits.train, digits.val, RESUME_CFG, info=digits.info, out_dir=tmp_path,
            progress=False, log=kill_after_epoch_2)
    assert {p.name for p in tmp_path.iterdir()} >= {"last.safetensors", "best.safetensors", "state.json"}
    resumed = tiny_cnn(seed=123)  # a different init: everything must come from the checkpoint
    seen: list[int] = []
    res_b = fit(resumed, digits.train, digits.val, RESUME_CFG, info=digits.info, out_dir=tmp_path,
                progress=False, log=lambda row: seen.append(row["epoch"]))
    assert seen == [3, 4]
    assert state_equal(straight, resumed)
    assert numbers(res_a.history) == numbers(res_b.history)
    assert (res_a.best_epoch, res_a.val_robust) == (res_b.best_epoch, res_b.val_robust)
    # a finished run re-opened trains nothing and returns the same weights
    again = tiny_cnn(seed=7)
    res_c = fit(again, digits.train, digits.val, RESUME_CFG, info=digits.info, out_dir=tmp_path,
                progress=False)
    assert res_c.epochs_run == 4 and state_equal(straight, again)
    # its training time is the run's, summed over epochs of both calls, not the re-open's
    assert res_c.seconds == res_b.seconds == pytest.approx(sum(r["time/epoch_s"] for r in res_b.history))
    assert res_c.seconds > 0 and len(res_b.history) == 4


def test_extending_a_constant_schedule_run_equals_a_straight_run(digits: Splits, tmp_path: Path) -> None:
    cfg4 = TrainConfig(recipe="pgd", attack_steps=1, epochs=4, schedule="constant", **FAST)
    straight = tiny_cnn()
    fit(straight, digits.train, digits.val, cfg4, info=digits.info, progress=False)
    fit(tiny_cnn(), digits.train, digits.val, dataclasses.replace(cfg4, epochs=2), info=digits.info,
        out_dir=tmp_path, progress=False)
    extended = tiny_cnn(seed=5)
    res = fit(extended, digits.train, digits.val, cfg4, info=digits.info, out_dir=tmp_path, progress=False)
    assert res.epochs_run == 4 and [r["epoch"] for r in res.history] == [1, 2, 3, 4]
    assert state_equal(straight, extended)
    # a schedule that depends on the total would change its learning rates: refused
    with pytest.raises(BadInput, match="new --out or delete"):
        fit(tiny_cnn(), digits.train, digits.val, dataclasses.replace(cfg4, epochs=6, schedule="multistep"),
            info=digits.info, out_dir=tmp_path, progress=False)


def test_checkpoint_of_another_config_or_corrupt_is_bad_input(digits: Splits, tmp_path: Path) -> None:
    small = digits.train.subset(128, seed=0)
    cfg = TrainConfig(recipe="standard", epochs=1, **FAST)
    fit(tiny_cnn(), small, digits.val, cfg, info=digits.info, out_dir=tmp_path, progress=True)  # bars work
    with pytest.raises(BadInput, match=r"different training config \(lr.*new --out or delete"):
        fit(tiny_cnn(), small, digits.val, dataclasses.replace(cfg, lr=0.01), info=digits.info,
            out_dir=tmp_path, progress=False)
    with pytest.raises(BadInput, match="does not match this model"):
        fit(tiny_cnn(width=8), small, digits.val, cfg, info=digits.info, out_dir=tmp_path, progress=False)
    # device / compile do not change the numbers: still the same run
    fit(tiny_cnn(), small, digits.val, dataclasses.replace(cfg, device="cpu"), info=digits.info,
        out_dir=tmp_path, progress=False)

    state = tmp_path / "state.json"
    good = state.read_text()
    state.write_text(good[: len(good) // 2])
    with pytest.raises(BadInput, match="state.json"):
        fit(tiny_cnn(), small, digits.val, cfg, info=digits.info, out_dir=tmp_path, progress=False)
    state.write_text(good)
    last = tmp_path / "last.safetensors"
    last.write_bytes(last.read_bytes()[:-100])  # truncated, as by a full disk
    with pytest.raises(BadInput, match="last.safetensors"):
        fit(tiny_cnn(), small, digits.val, cfg, info=digits.info, out_dir=tmp_path, progress=False)
    with pytest.raises(BadInput, match="last.safetensors"):
        load_weights(tiny_cnn(), last)
    with pytest.raises(BadInput, match="not found"):
        load_weights(tiny_cnn(), tmp_path / "nope.safetensors")
    model = load_weights(tiny_cnn(seed=9), tmp_path / "best.safetensors")
    assert accuracy(model, digits.val) > 0.1


# ---------------------------------------------------------------- catastrophic-overfitting guard

def test_guard_trips_on_a_collapse_restores_best_and_falls_back_to_pgd(
        digits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Real CO does not happen reliably on 8x8 digits, so the measurement is faked to collapse at
    epoch 3 (robust 0 while clean stays real); detection, restore and fallback are the real code."""
    real_validate = train_loop._validate
    calls = {"n": 0}

    def collapsing_validate(*args, **kwargs):
        clean, robust = real_validate(*args, **kwargs)
        calls["n"] += 1
        return clean, (0.0 if calls["n"] == 3 else robust)

    used: list[str] = []

    def spy(name: str):
        recipe = RECIPES.get(name)

        def counted(*args, **kwargs):
            used.append(name)
            return recipe(*args, **kwargs)
        return counted

    for name in ("fgsm-rs", "pgd"):
        monkeypatch.setitem(RECIPES._entries, name, spy(name))
    monkeypatch.setattr(train_loop, "_validate", collapsing_validate)

    snapshots: dict[int, dict] = {}

    def grab(row: dict) -> None:
        from safetensors.torch import load_file
        snapshots[row["epoch"]] = {k: v for k, v in load_file(tmp_path / "last.safetensors").items()
                                   if "::" not in k}

    model = tiny_cnn()
    cfg = TrainConfig(recipe="fgsm-rs", epochs=5, **FAST)
    res = fit(model, digits.train, digits.val, cfg, info=digits.info, out_dir=tmp_path, progress=False,
              log=grab)
    assert res.guard_tripped
    assert "catastrophic overfitting at epoch 3" in caplog.text
    assert [r["guard/tripped"] for r in res.history[:3]] == [0.0, 0.0, 1.0]
    assert all("guard/tripped" not in r for r in res.history[3:])  # no fast recipe any more
    steps = len(digits.train) // FAST["batch_size"]
    assert used == ["fgsm-rs"] * 3 * steps + ["pgd"] * 2 * steps  # fell back for the remaining epochs
    # the weights after the collapsed epoch are those of the best epoch before it
    best_before = max((1, 2), key=lambda e: res.history[e - 1]["eval/val_robust"])
    assert all(torch.equal(snapshots[3][k], snapshots[best_before][k]) for k in snapshots[3])
    assert res.best_epoch != 3 and res.val_robust > 0.0


@pytest.mark.parametrize("recipe,guard", [("fgsm-rs", False), ("pgd", True)])
def test_guard_off_or_slow_recipe_never_trips(digits: Splits, monkeypatch: pytest.MonkeyPatch,
                                              recipe: str, guard: bool) -> None:
    real_validate = train_loop._validate
    calls = {"n": 0}

    def collapsing_validate(*args, **kwargs):
        clean, robust = real_validate(*args, **kwargs)
        calls["n"] += 1
        return clean, (0.0 if calls["n"] == 3 else robust)

    monkeypatch.setattr(train_loop, "_validate", collapsing_validate)
    cfg = TrainConfig(recipe=recipe, epochs=3, attack_steps=1, guard=guard, **FAST)
    res = fit(tiny_cnn(), digits.train, digits.val, cfg, info=digits.info, progress=False)
    peak = max(r["eval/val_robust"] for r in res.history[:2])
    assert guard_trips(peak, 0.0, res.history[2]["eval/val_clean"])  # the same collapse would trip it...
    assert not res.guard_tripped and all("guard/tripped" not in r for r in res.history)  # ...were it on


def test_a_standard_training_reports_no_robust_accuracy_as_null_in_strict_json(tmp_path, capsys) -> None:
    """`rcnas train --recipe standard --json` has no robust accuracy: null, never a bare NaN that most
    JSON parsers refuse, on stdout and in model.json alike."""
    import json

    from rcnas.cli import main
    from rcnas.io import json_safe
    assert json_safe({"a": [1.0, math.nan, {"b": math.inf}], "c": "x"}) == {"a": [1.0, None, {"b": None}], "c": "x"}
    assert main(["train", "--dataset", "digits", "--depths", "1", "1", "1", "--widths", "0.5", "0.5", "0.5",
                 "--recipe", "standard", "--epochs", "1", "--out", str(tmp_path / "m"), "--json"]) == 0
    strict = lambda text: json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    out = strict(capsys.readouterr().out)
    assert out["val_robust"] is None and 0 <= out["val_clean"] <= 1
    assert strict((tmp_path / "m" / "model.json").read_text())["training"]["val_robust"] is None


def test_train_of_a_searched_architecture_starts_from_its_teacher_and_cost_reads_its_input(tmp_path, capsys) -> None:
    """A search's arch.yaml records the task setting it was found for: `rcnas train` then starts from that
    teacher's weights (as `rcnas run` does) unless --from-scratch, and `rcnas cost` counts at its input."""
    import json

    from rcnas.api import train_teacher
    from rcnas.cli import main
    from rcnas.io import read_yaml, write_yaml
    from rcnas.space.arch import Arch
    arch = Arch.from_widths([1, 1, 1], [0.5, 0.5, 0.5], ["basic"] * 3)
    found = {"dataset": "digits", "input_size": 8, "channels": 1, "num_classes": 10, "teacher": "wrn-16-1",
             "teacher_epochs": 1, "eps": 0.15, "attack": "pgd", "budget_macs": 10**6}
    path = write_yaml(tmp_path / "arch.yaml", arch.to_dict() | {"searched_for": found})
    assert read_yaml(path)["searched_for"] == found

    assert main(["cost", "--arch", str(path), "--json"]) == 0
    at_digits = json.loads(capsys.readouterr().out)
    assert main(["cost", "--depths", "1", "1", "1", "--widths", "0.5", "0.5", "0.5", "--input-size", "8",
                 "--channels", "1", "--json"]) == 0
    assert at_digits == json.loads(capsys.readouterr().out)  # 8x8x1, not the 32x32x3 default

    common = ["train", "--arch", str(path), "--recipe", "standard", "--epochs", "1", "--train-samples", "100",
              "--json"]
    for flag, out, init in (([], "inherited", "teacher wrn-16-1"), (["--from-scratch"], "scratch", "scratch")):
        assert main(common + flag + ["--out", str(tmp_path / out)]) == 0
        capsys.readouterr()
        assert json.loads((tmp_path / out / "model.json").read_text())["training"]["init"] == init
    # the teacher it started from is the one the record names, trained as recorded (1 epoch) and now cached
    train_teacher("digits", "wrn-16-1", epochs=1, cached_only="the inheriting train above should have cached it")
