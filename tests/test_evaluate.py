"""Robustness evaluation and model cards on a small CNN trained on scikit-learn's 8x8 digits."""
from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from torch import nn

from rcnas.attacks import CW, FGSM, PGD, AutoAttack, make_attack
from rcnas.errors import BadInput
from rcnas.evaluate import ModelCard, RobustnessResult, evaluate_robustness, latency_method, measure_latency

EPS = 0.15


class Quantise(nn.Module):
    """Round inputs to the 17 grey levels digits use: exact on clean digits, zero input gradient."""

    def forward(self, x):
        return torch.round(x * 16) / 16


@pytest.fixture(scope="module")
def full(model, data) -> RobustnessResult:
    """Every attack, AutoAttack included, on 100 test digits (one batch: AutoAttack costs per batch)."""
    return evaluate_robustness(model, data.xte[:100], data.yte[:100], eps=EPS, batch_size=128,
                               attacks=("clean", "fgsm", "pgd20", "cw40", "aa"))


def test_reported_accuracies_are_ordered_per_sample(full, model, data):
    with torch.no_grad():
        clean = float((model(data.xte[:100]).argmax(1) == data.yte[:100]).float().mean())
    acc = full.attacks
    assert full.n == 100 and full.clean == pytest.approx(clean) and full.clean > 0.9
    assert list(acc) == ["fgsm", "pgd20", "cw40", "aa", "aa_only"]
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    assert acc["aa"] <= acc["pgd20"] <= full.clean
    assert acc["aa"] <= min(acc["fgsm"], acc["cw40"], acc["aa_only"])
    assert acc["aa"] == full.worst_case
    assert acc["pgd20"] < full.clean - 0.4  # an undefended model at eps 0.15
    assert set(full.seconds) == {"clean", "fgsm", "pgd20", "cw40", "aa", "total"}
    assert full.lipschitz is not None and full.lipschitz > 0
    json.dumps(full.to_dict())


def test_no_sanity_warning_on_a_normal_model(full):
    own = [w for w in full.warnings if "pyautoattack" not in w]
    assert own == [], own


def test_evaluation_leaves_the_model_untouched(model, data):
    m = copy.deepcopy(model).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    evaluate_robustness(m, data.xte[:40], data.yte[:40], eps=EPS, attacks=("clean", "pgd7"))
    assert m.training and all(mod.training for mod in m.modules())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in m.parameters())


def test_inference_mode_inputs_are_accepted(model, data):
    with torch.inference_mode():
        x, y = data.xte[:20].clone(), data.yte[:20].clone()
    r = evaluate_robustness(model, x, y, eps=EPS, attacks=("clean", "fgsm"))
    assert r.n == 20


def _count_calls(monkeypatch, cls) -> list[int]:
    calls = []
    original = cls.perturb

    def counted(self, model, x, y):
        calls.append(len(x))
        return original(self, model, x, y)

    monkeypatch.setattr(cls, "perturb", counted)
    return calls


def test_resume_skips_finished_attacks(model, data, tmp_path, monkeypatch):
    x, y = data.xte[:60], data.yte[:60]
    first = evaluate_robustness(model, x, y, eps=EPS, attacks=("clean", "fgsm", "pgd7"), batch_size=25,
                                state_dir=tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"fgsm.pt", "fgsm.json", "pgd7.pt", "pgd7.json"}
    fgsm_calls, pgd_calls, cw_calls = (_count_calls(monkeypatch, c) for c in (FGSM, PGD, CW))
    again = evaluate_robustness(model, x, y, eps=EPS, attacks=("clean", "fgsm", "pgd7", "cw10"),
                                batch_size=25, state_dir=tmp_path)
    assert fgsm_calls == [] and pgd_calls == []
    assert cw_calls == [25, 25, 10]
    assert {k: again.attacks[k] for k in first.attacks} == first.attacks
    assert again.seconds["pgd7"] == pytest.approx(first.seconds["pgd7"])

    # an attack killed before its .json (the commit) was written is run again
    (tmp_path / "fgsm.json").unlink()
    evaluate_robustness(model, x, y, eps=EPS, attacks=("fgsm", "pgd7"), batch_size=25, state_dir=tmp_path)
    assert len(fgsm_calls) == 3 and pgd_calls == []


def test_resume_refuses_results_of_another_setting(model, data, tmp_path):
    x, y = data.xte[:30], data.yte[:30]
    evaluate_robustness(model, x, y, eps=EPS, attacks=("fgsm",), state_dir=tmp_path)
    with pytest.raises(BadInput, match="another model"):
        evaluate_robustness(model, x, y, eps=0.1, attacks=("fgsm",), state_dir=tmp_path)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].bias.add_(0.01)
    with pytest.raises(BadInput, match="another model"):
        evaluate_robustness(other, x, y, eps=EPS, attacks=("fgsm",), state_dir=tmp_path)
    with pytest.raises(BadInput, match="another model"):
        evaluate_robustness(model, data.xte[30:60], data.yte[30:60], eps=EPS, attacks=("fgsm",),
                            state_dir=tmp_path)


def test_gradient_masking_is_flagged(model, data):
    x, y = data.xte[:60], data.yte[:60]
    masked = nn.Sequential(Quantise(), copy.deepcopy(model)).eval()
    r = evaluate_robustness(masked, x, y, eps=EPS, attacks=("clean", "fgsm"))
    assert r.clean > 0.9
    assert any("gradient masking" in w for w in r.warnings), r.warnings
    normal = evaluate_robustness(model, x, y, eps=EPS, attacks=("clean", "fgsm"))
    assert not any("gradient" in w for w in normal.warnings), normal.warnings


def test_a_weaker_attack_beating_a_stronger_one_is_flagged(model, data, monkeypatch):
    x, y = data.xte[:60], data.yte[:60]
    monkeypatch.setattr(PGD, "perturb", lambda self, model, x, y: x)  # a PGD that does nothing
    r = evaluate_robustness(model, x, y, eps=EPS, attacks=("fgsm", "pgd20"))
    assert r.attacks["pgd20"] == r.clean
    assert any("pgd20" in w and "weaker than fgsm" in w for w in r.warnings), r.warnings


def test_a_broken_autoattack_cannot_report_more_than_pgd(model, data, monkeypatch):
    x, y = data.xte[:60], data.yte[:60]
    monkeypatch.setattr(AutoAttack, "perturb", lambda self, model, x, y: x)
    r = evaluate_robustness(model, x, y, eps=EPS, attacks=("pgd7", "aa"))
    assert r.attacks["aa_only"] == r.clean
    assert r.attacks["aa"] <= r.attacks["pgd7"]  # the reported number is the per-sample worst case
    assert any("AutoAttack alone" in w for w in r.warnings), r.warnings


def test_an_attack_raising_accuracy_above_clean_is_flagged(model, data, monkeypatch):
    x, y = data.xte[:30].clone(), data.yte[:30].clone()
    y[:10] = (model(x[:10]).argmax(1) + 1) % 10  # a third of the labels are now wrong
    with torch.no_grad():
        pred = model(data.xtr).argmax(1)
    prototype = torch.stack([data.xtr[(pred == c) & (data.ytr == c)][0] for c in range(10)])
    # an "attack" that replaces each input by a clean example of its label (eps 1 allows it)
    monkeypatch.setattr(FGSM, "perturb", lambda self, model, x, y: prototype[y])
    r = evaluate_robustness(model, x, y, eps=1.0, attacks=("clean", "fgsm"))
    assert r.clean < 0.7 and r.attacks["fgsm"] <= r.clean
    assert any("above clean accuracy" in w for w in r.warnings), r.warnings


@pytest.mark.parametrize("kwargs,match", [
    ({"attacks": ("pgd", "pgd20")}, "twice"),
    ({"attacks": ("fgsm", "nope")}, "unknown attack"),
    ({"attacks": ("aa_only",)}, "unknown attack"),
    ({"batch_size": 0}, "batch_size"),
    ({"eps": float("nan")}, "finite"),
    ({"device": "tpu"}, "device"),
])
def test_bad_arguments_are_bad_input(model, data, kwargs, match):
    args = {"eps": EPS, "attacks": ("clean",)} | kwargs
    with pytest.raises(BadInput, match=match):
        evaluate_robustness(model, data.xte[:8], data.yte[:8], **args)


def test_bad_data_is_bad_input(model, data):
    with pytest.raises(BadInput, match=r"\[0,1\]"):
        evaluate_robustness(model, data.xte[:8] * 255, data.yte[:8], eps=EPS)
    with pytest.raises(BadInput, match="labels"):
        evaluate_robustness(model, data.xte[:8], data.yte[:5], eps=EPS)
    with pytest.raises(BadInput, match="no samples"):
        evaluate_robustness(model, data.xte[:0], data.yte[:0], eps=EPS)


def test_measure_latency(model):
    m = copy.deepcopy(model).train()
    seconds = measure_latency(m, (1, 8, 8), batch_size=4, repeats=5)
    assert 0 < seconds < 1
    assert m.training
    with pytest.raises(BadInput, match="input_shape"):
        measure_latency(m, (1, 0, 8))
    # the thread count is fixed for the measurement and given back afterwards
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []
    hook = m.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    try:
        measure_latency(m, (1, 8, 8), repeats=3, warmup=1, threads=1)
        assert seen == [1] * 4 and torch.get_num_threads() == 2
    finally:
        hook.remove()
        torch.set_num_threads(before)
    assert latency_method(repeats=3, warmup=1, threads=1) == \
        "median of 3 forward passes of batch 1 after 1 warm-up, 1 CPU thread"


# --- model card ------------------------------------------------------------------------------------

def _card(full: RobustnessResult) -> ModelCard:
    return ModelCard.from_result(full, name="digits-cnn", dataset="digits",
                                 arch={"depths": [1, 1, 1], "channels": [16, 32, 64]}, eps=EPS,
                                 params=12345, macs=678901, latency_ms_cpu=0.25,
                                 training={"recipe": "standard", "epochs": 8, "seed": 0})


def test_model_card_json_round_trip(full, tmp_path):
    card = _card(full)
    path = card.to_json(tmp_path / "card.json")
    assert ModelCard.from_json(path) == card
    stored = json.loads(path.read_text())
    assert list(stored) == [f.name for f in dataclasses.fields(ModelCard)]
    assert stored["aa_acc"] == full.attacks["aa"] and stored["aa_only_acc"] == full.attacks["aa_only"]
    assert stored["pgd20_acc"] == full.attacks["pgd20"] and stored["n_eval"] == 100


def test_model_card_markdown_shows_the_numbers(full):
    text = _card(full).to_markdown()
    for v in (full.clean, full.attacks["pgd20"], full.attacks["cw40"], full.attacks["aa"],
              full.attacks["aa_only"]):
        assert f"{v:.2%}" in text
    assert "12,345" in text and "678,901" in text and "digits-cnn" in text
    assert "38.25/255" in text
    assert f"pgd20 {full.seconds['pgd20']:.1f} s" in text  # each attack's time, as it ran


def test_model_card_rejects_malformed_files(full, tmp_path):
    good = _card(full).to_dict()
    for broken, match in ((good | {"extra": 1}, "unknown key"),
                          ({k: v for k, v in good.items() if k != "macs"}, "missing required key"),
                          (good | {"clean_acc": 1.5}, r"\[0,1\]"),
                          (good | {"params": "many"}, "integer"),
                          (good | {"eval_seconds": {"aa": -1.0}}, "eval_seconds")):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(broken))
        with pytest.raises(BadInput, match=match):
            ModelCard.from_json(path)


def test_model_card_without_autoattack(model, data):
    r = evaluate_robustness(model, data.xte[:20], data.yte[:20], eps=EPS, attacks=("clean", "fgsm"))
    card = ModelCard.from_result(r, name="x", dataset="digits", arch={}, eps=EPS, params=1, macs=1)
    assert card.aa_acc is None and card.pgd20_acc is None and card.worst_case_acc == r.worst_case
    assert "| PGD-20 | - |" in card.to_markdown()
    assert make_attack("fgsm", EPS).name in r.attacks
    # an attack outside the fixed columns is still reported: in the card, its JSON and its markdown
    assert card.other_acc == {"fgsm": r.attacks["fgsm"]}
    assert f"| fgsm | {r.attacks['fgsm']:.2%} |" in card.to_markdown()


def test_every_attack_the_evaluation_ran_is_in_the_card(full, tmp_path):
    card = _card(full)
    assert card.other_acc == {"fgsm": full.attacks["fgsm"]}  # pgd20/cw40/aa have their own fields
    stored = json.loads(card.to_json(tmp_path / "card.json").read_text())
    assert stored["other_acc"] == {"fgsm": full.attacks["fgsm"]}
    (tmp_path / "bad.json").write_text(json.dumps(stored | {"other_acc": {"fgsm": 2.0}}))
    with pytest.raises(BadInput, match=r"other_acc\['fgsm'\] must be a fraction"):
        ModelCard.from_json(tmp_path / "bad.json")


def test_autoattack_progress_moves_per_sub_attack(model, data, capsys):
    """One AutoAttack batch takes minutes on a CPU: its bar counts the sub-attacks as they finish."""
    r = evaluate_robustness(model, data.xte[:16], data.yte[:16], eps=EPS, attacks=("clean", "aa"), progress=True)
    err = capsys.readouterr().err
    assert "aa (16 images)" in err and "/4 " in err  # of APGD-CE, APGD-T, FAB-T, Square
    assert "1/4" in err and "apgd-ce" in err  # it moved when the first one ended (later ones skip once none is left)
    assert 0 <= r.attacks["aa"] <= r.clean
