"""Attacks on a small CNN trained on real data (scikit-learn's 8x8 digits, eps 0.15)."""
from __future__ import annotations

import copy
import math
import sys
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from rcnas.attacks import (ATTACKS, CW, FGSM, NORMS, PGD, Attack, AutoAttack, Clean, local_lipschitz,
                           make_attack, pgd, project)
from rcnas.errors import BadInput

EPS = 0.15  # digits' default L-inf radius (pixel values are k/16)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def aa_run(model, data) -> SimpleNamespace:
    """One AutoAttack run (100 samples) on a train-mode copy, checked by several tests."""
    m = copy.deepcopy(model).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.get_rng_state()
    x, y = data.xte[:100], data.yte[:100]
    attack = make_attack("aa", EPS)
    start = time.perf_counter()
    x_adv = attack(m, x, y)
    return SimpleNamespace(model=m, before=before, rng_unchanged=torch.equal(rng, torch.get_rng_state()),
                           x=x, y=y, x_adv=x_adv, attack=attack, seconds=time.perf_counter() - start)


def test_trained_model_is_accurate(model, data):
    assert accuracy(model, data.xte, data.yte) > 0.9


@pytest.mark.parametrize("name", ["fgsm", "pgd", "cw"])
def test_gradient_attacks_lower_accuracy(model, data, name):
    x, y = data.xte[:300], data.yte[:300]
    clean = accuracy(model, x, y)
    assert accuracy(model, make_attack(name, EPS)(model, x, y), y) < clean - 0.4


def test_pgd_is_at_least_as_strong_as_fgsm(model, data):
    x, y = data.xte[:300], data.yte[:300]
    assert accuracy(model, make_attack("pgd20", EPS)(model, x, y), y) <= \
        accuracy(model, make_attack("fgsm", EPS)(model, x, y), y)


def test_autoattack_lowers_accuracy_below_pgd(aa_run):
    m = copy.deepcopy(aa_run.model).eval()
    clean = accuracy(m, aa_run.x, aa_run.y)
    robust = accuracy(m, aa_run.x_adv, aa_run.y)
    pgd20 = accuracy(m, make_attack("pgd20", EPS)(m, aa_run.x, aa_run.y), aa_run.y)
    assert robust < clean - 0.4
    assert robust <= pgd20 + 0.02
    print(f"AutoAttack on {len(aa_run.x)} digits: {aa_run.seconds:.1f} s, {clean:.2%} -> {robust:.2%}")


def _assert_in_ball(x_adv, x, eps, norm):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    delta = (x_adv - x).flatten(1)  # (x + d) - x differs from d by float32 rounding (~6e-8)
    if norm == "Linf":
        assert float(delta.abs().amax()) <= eps + 1e-6
    else:
        assert float(delta.norm(dim=1).amax()) <= eps * (1 + 1e-5) + 1e-6


@pytest.mark.parametrize("name,norm,eps", [("fgsm", "Linf", EPS), ("pgd", "Linf", EPS), ("cw", "Linf", EPS),
                                           ("fgsm", "L2", 1.0), ("pgd7", "L2", 1.0), ("cw10", "L2", 1.0)])
def test_adversarial_examples_stay_in_the_ball_and_range(model, data, name, norm, eps):
    x, y = data.xte[:200], data.yte[:200]
    x_adv = make_attack(name, eps, norm=norm)(model, x, y)
    _assert_in_ball(x_adv, x, eps, norm)
    # the attack uses its budget (not a vacuous pass)
    size = (x_adv - x).flatten(1).abs().amax(1) if norm == "Linf" else (x_adv - x).flatten(1).norm(dim=1)
    assert float(size.max()) > 0.9 * eps


def test_autoattack_examples_stay_in_the_ball(aa_run):
    _assert_in_ball(aa_run.x_adv, aa_run.x, EPS, "Linf")


def _snapshot(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def _assert_untouched(m: nn.Module, before: dict[str, torch.Tensor], modes: list[bool]) -> None:
    after = m.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "weights or BN buffers changed"
    assert [mod.training for mod in m.modules()] == modes
    assert all(p.grad is None for p in m.parameters()), "an attack left parameter .grad"
    assert all(p.requires_grad for p in m.parameters())


@pytest.mark.parametrize("name", ["clean", "fgsm", "pgd", "cw"])
def test_attacks_leave_the_model_untouched(model, data, name):
    m = copy.deepcopy(model).train()
    m[1].eval()  # a mixed-mode model (frozen BN) must come back mixed, not all-train
    before, modes = _snapshot(m), [mod.training for mod in m.modules()]
    make_attack(name, EPS)(m, data.xte[:64], data.yte[:64])
    _assert_untouched(m, before, modes)
    m.eval()
    make_attack(name, EPS)(m, data.xte[:64], data.yte[:64])
    assert not any(mod.training for mod in m.modules())


def test_autoattack_leaves_the_model_and_global_rng_untouched(aa_run):
    # FAB calls backward(): without the base class's freezing, parameters would get .grad
    _assert_untouched(aa_run.model, aa_run.before, [True] * len(list(aa_run.model.modules())))
    assert aa_run.rng_unchanged, "pyautoattack's manual_seed leaked into torch's global RNG"


def test_autoattack_restores_the_callers_trace_function(model, data):
    calls = []

    def tracer(frame, event, arg):  # a stand-in for coverage or a debugger
        calls.append(event)

    x = data.xte[:8]
    wrong = (model(x).argmax(1) + 1) % 10  # nothing to attack: AutoAttack returns after its checks
    sys.settrace(tracer)
    try:
        x_adv = make_attack("aa", EPS)(model, x, wrong)
        still = sys.gettrace()
    finally:
        sys.settrace(None)
    assert still is tracer
    assert torch.equal(x_adv, x)


def test_autoattack_needs_four_classes(data):
    three = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(BadInput, match="4 classes"):
        make_attack("aa", EPS)(three, data.xte[:4], torch.tensor([0, 1, 2, 0]))


def test_same_seed_gives_the_same_examples_and_global_rng_is_untouched(model, data):
    x, y = data.xte[:100], data.yte[:100]
    rng = torch.get_rng_state()
    a = make_attack("pgd7", EPS, seed=3)(model, x, y)
    b = make_attack("pgd7", EPS, seed=3)(model, x, y)
    c = make_attack("pgd7", EPS, seed=4)(model, x, y)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(rng, torch.get_rng_state())


def test_attacks_run_in_fp32_under_bf16_autocast(model, data):
    x, y = data.xte[:64], data.yte[:64]
    reference = make_attack("pgd7", EPS)(model, x, y)
    dtypes = []
    hook = model[-1].register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x_adv = make_attack("pgd7", EPS)(model, x, y)
            assert torch.is_autocast_enabled("cpu"), "the caller's autocast context was not restored"
    finally:
        hook.remove()
    assert dtypes and set(dtypes) == {torch.float32}
    assert x_adv.dtype == torch.float32
    assert torch.equal(x_adv, reference)


def test_attacks_work_under_no_grad_and_inference_mode(model, data):
    x, y = data.xte[:32], data.yte[:32]
    reference = make_attack("pgd7", EPS)(model, x, y)
    with torch.no_grad():
        assert torch.equal(make_attack("pgd7", EPS)(model, x, y), reference)
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()
        assert torch.equal(make_attack("pgd7", EPS)(model, xi, yi), reference)


def test_clean_is_the_identity(model, data):
    x, y = data.xte[:16], data.yte[:16]
    assert torch.equal(make_attack("clean", EPS)(model, x, y), x)


def test_attacks_reject_normalised_inputs(model, data):
    x, y = data.xte[:8], data.yte[:8]
    with pytest.raises(BadInput, match=r"\[0,1\]"):
        make_attack("pgd", EPS)(model, x * 2 - 1, y)
    with pytest.raises(BadInput, match="labels"):
        make_attack("pgd", EPS)(model, x, y[:4])


# --- the projected-gradient core, as the trainer (TRADES) calls it ---------------------------------

def _kl_to(clean_probs):
    return lambda logits, _: F.kl_div(F.log_softmax(logits, dim=1), clean_probs, reduction="sum")


def test_pgd_core_with_a_trades_loss(model, data):
    m = copy.deepcopy(model).eval()
    x = data.xte[:64]
    with torch.no_grad():
        probs = F.softmax(m(x), dim=1)
    loss = _kl_to(probs)
    start = pgd(m, x, probs, loss, eps=EPS, step_size=0.03, steps=0, random_start=True,
                generator=torch.Generator().manual_seed(1))
    x_adv = pgd(m, x, probs, loss, eps=EPS, step_size=0.03, steps=10, random_start=True,
                generator=torch.Generator().manual_seed(1))
    _assert_in_ball(x_adv, x, EPS, "Linf")
    with torch.no_grad():
        assert float(loss(m(x_adv), None)) > 2 * float(loss(m(start), None))
    assert all(p.grad is None for p in m.parameters())  # grads w.r.t. the input only
    assert not x_adv.requires_grad


def test_pgd_core_accepts_per_sample_losses_and_no_grad(model, data):
    x, y = data.xte[:32], data.yte[:32]
    kw = {"eps": EPS, "step_size": 0.02, "steps": 5, "random_start": False}
    summed = pgd(model, x, y, lambda z, t: F.cross_entropy(z, t, reduction="sum"), **kw)
    with torch.no_grad():
        per_sample = pgd(model, x, y, lambda z, t: F.cross_entropy(z, t, reduction="none"), **kw)
    assert torch.allclose(summed, per_sample)


def test_pgd_core_survives_a_model_without_input_gradient(data):
    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.detach().flatten(1))

    x, y = data.xte[:8], data.yte[:8]
    x_adv = pgd(Detached(), x, y, lambda z, t: F.cross_entropy(z, t), eps=EPS, step_size=0.01, steps=3,
                random_start=False)
    assert torch.equal(x_adv, x)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), eps=st.floats(1e-3, 1.0), norm=st.sampled_from(NORMS))
def test_project_lands_in_the_ball_and_range_and_is_idempotent(seed, eps, norm):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(5, 1, 4, 4, generator=g)
    x_adv = x + 3 * torch.randn(5, 1, 4, 4, generator=g)
    p = project(x_adv, x, eps, norm)
    _assert_in_ball(p, x, eps, norm)
    assert torch.allclose(project(p, x, eps, norm), p, atol=1e-6)


# --- make_attack ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,cls,canonical,steps,step,random_start", [
    ("clean", Clean, "clean", 0, None, False),
    ("fgsm", FGSM, "fgsm", 1, 0.1, False),
    ("pgd", PGD, "pgd20", 20, 0.01, True),
    ("pgd20", PGD, "pgd20", 20, 0.01, True),
    ("PGD-20", PGD, "pgd20", 20, 0.01, True),
    ("pgd7", PGD, "pgd7", 7, 2.5 * 0.1 / 7, True),
    ("cw", CW, "cw40", 40, 0.01, True),
    ("CW-40", CW, "cw40", 40, 0.01, True),
    ("cw10", CW, "cw10", 10, 0.025, True),
    ("aa", AutoAttack, "aa", None, None, None),
    ("autoattack", AutoAttack, "aa", None, None, None),
])
def test_make_attack_parses_names(name, cls, canonical, steps, step, random_start):
    a = make_attack(name, 0.1, seed=5)
    assert type(a) is cls and a.name == canonical and a.eps == 0.1 and a.seed == 5 and a.norm == "Linf"
    if steps is not None:
        assert a.steps == steps
    if step is not None:
        assert a.step_size == pytest.approx(step)
    if random_start is not None:
        assert a.random_start is random_start


def test_make_attack_uses_the_papers_step_size_and_overrides():
    assert make_attack("pgd20", 8 / 255).step_size == pytest.approx(0.8 / 255)
    a = make_attack("pgd", 0.5, norm="L2", step_size=0.1, random_start=False)
    assert (a.norm, a.step_size, a.random_start) == ("L2", 0.1, False)
    assert make_attack("pgd", 2.0, norm="L2").eps == 2.0  # an L2 radius may exceed 1
    assert set(ATTACKS.names()) == {"clean", "fgsm", "pgd", "cw", "aa"}
    assert isinstance(make_attack("pgd", 0.1), Attack)


@pytest.mark.parametrize("name,eps,overrides,match", [
    ("foo", 0.1, {}, "unknown attack"),
    ("", 0.1, {}, "unknown attack"),
    ("pgd0", 0.1, {}, ">= 1"),
    ("fgsm3", 0.1, {}, "no step count"),
    ("aa5", 0.1, {}, "no step count"),
    ("pgd7", 0.1, {"steps": 9}, "not both"),
    ("pgd", 0.1, {"bogus": 1}, "no setting 'bogus'"),
    ("pgd", 0.1, {"norm": "L3"}, "unknown norm"),
    ("pgd", 0.1, {"step_size": -1.0}, "step_size"),
    ("aa", 0.1, {"version": "fast"}, "version"),
    ("pgd", 0.0, {}, "> 0"),
    ("pgd", -0.1, {}, "> 0"),
    ("pgd", 1.5, {}, "above 1"),
    ("pgd", 8, {}, "8/255"),
    ("pgd", math.nan, {}, "finite"),
    ("pgd", math.inf, {}, "finite"),
    ("pgd", "0.1", {}, "number"),
])
def test_make_attack_rejects_bad_input(name, eps, overrides, match):
    with pytest.raises(BadInput, match=match) as e:
        make_attack(name, eps, **overrides)
    assert "\n" not in str(e.value)


# --- local Lipschitz ------------------------------------------------------------------------------

def _linear_model_and_data():
    g = torch.Generator().manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        lin[1].weight.copy_(torch.randn(10, 64, generator=g))
        lin[1].bias.copy_(torch.randn(10, generator=g))
    x = 0.25 + 0.5 * torch.rand(40, 1, 8, 8, generator=g)  # interior: eps 0.1 never hits 0 or 1
    y = torch.randint(0, 10, (40,), generator=g)
    return lin, x, y


def _fgsm_ratio_by_hand(lin, x, y, eps):
    """On f(x) = Wx + b, FGSM moves x by eps*sign(W^T (softmax - onehot)), so f changes by W delta."""
    w, b = lin[1].weight.detach(), lin[1].bias.detach()
    xf = x.flatten(1)
    p = torch.softmax(xf @ w.T + b, dim=1)
    delta = eps * torch.sign((p - F.one_hot(y, 10).float()) @ w)
    return (delta @ w.T).abs().sum(1) / eps


def test_local_lipschitz_matches_a_hand_computation_on_a_linear_model():
    lin, x, y = _linear_model_and_data()
    expected = _fgsm_ratio_by_hand(lin, x, y, 0.1).mean()
    assert local_lipschitz(lin, x, y, FGSM(0.1)) == pytest.approx(float(expected), rel=1e-5)


def test_local_lipschitz_skips_unperturbed_samples():
    class FirstHalf(Attack):
        kind = "first-half"

        def perturb(self, model, x, y):
            out = FGSM(self.eps).perturb(model, x, y)
            out[len(x) // 2:] = x[len(x) // 2:]
            return out

    lin, x, y = _linear_model_and_data()
    expected = _fgsm_ratio_by_hand(lin, x, y, 0.1)[:20].mean()
    assert local_lipschitz(lin, x, y, FirstHalf(0.1)) == pytest.approx(float(expected), rel=1e-5)
    assert local_lipschitz(lin, x, y, Clean(0.1)) == 0.0


def test_local_lipschitz_of_the_trained_cnn_is_positive(model, data):
    value = local_lipschitz(model, data.xte[:100], data.yte[:100], make_attack("pgd7", EPS))
    assert math.isfinite(value) and value > 0
