"""Property-based tests (hypothesis) of the config and architecture parsers.

* `from_dict(cls, to_dict(x)) == x` and `to_dict(from_dict(cls, d)) == d` for valid configs;
* arbitrary junk (JSON-like values, also mappings using the real keys) either parses or raises
  `BadInput`, never another exception (which the CLI would print as a traceback);
* `parse_macs` on any text raises only `BadInput`, and returns a positive int otherwise;
* `Arch.from_widths` with widths in multiples of 1/16 round-trips through `to_dict`/`from_dict`,
  YAML, and the RobustResNet config format.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rcnas.agent.agent import AgentConfig
from rcnas.config import from_dict, to_dict
from rcnas.cost import parse_macs
from rcnas.errors import BadInput
from rcnas.search.evaluator import ProxyConfig
from rcnas.space.arch import STAGE_BASE, Arch
from rcnas.tasks import Buffers, Task
from rcnas.train import TrainConfig

FAST = settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- strategies of valid configs

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
attacks = st.one_of(st.sampled_from(["clean", "fgsm", "pgd", "cw", "aa"]),
                    st.builds(lambda k, n: f"{k}{n}", st.sampled_from(["pgd", "cw"]), st.integers(1, 200)))
unit_eps = st.floats(min_value=1e-6, max_value=1.0)
budgets = st.one_of(
    st.builds(lambda f: f"{f:g}x", st.floats(0.01, 1.0)),
    st.builds(lambda v, u: f"{v}{u}", st.integers(1, 999), st.sampled_from(["k", "M", "G"])),
    st.integers(1, 10**12).map(str),
)

tasks = st.builds(Task, dataset=names, attack=attacks, teacher=st.none() | names, budget=budgets,
                  eps=st.none() | unit_eps)

proxies = st.builds(
    ProxyConfig, epochs=st.integers(1, 50), batch_size=st.integers(1, 1024), lr=st.floats(1e-5, 1.0),
    recipe=st.sampled_from(["pgd", "trades", "fgsm-rs", "n-fgsm", "standard"]), attack_steps=st.integers(1, 20),
    train_samples=st.none() | st.integers(1, 10**6), val_samples=st.none() | st.integers(1, 10**6),
    val_steps=st.integers(1, 100), inherit=st.sampled_from(["l1", "first"]), lips_samples=st.integers(1, 512),
    teacher_epochs=st.integers(1, 100))

milestones = st.lists(st.floats(0.01, 0.99), min_size=0, max_size=4, unique=True).map(lambda m: tuple(sorted(m)))
train_configs = st.builds(
    dict,
    recipe=st.sampled_from(["standard", "pgd", "trades", "fgsm-rs", "n-fgsm"]),
    epochs=st.integers(1, 500), batch_size=st.integers(1, 4096), lr=st.floats(1e-6, 10.0),
    momentum=st.floats(0.0, 0.999), weight_decay=st.floats(0.0, 0.1), nesterov=st.booleans(),
    schedule=st.sampled_from(["multistep", "cosine", "onecycle", "constant"]), milestones=milestones,
    eps=st.none() | unit_eps, attack_steps=st.integers(1, 50), step_size=st.none() | st.floats(1e-6, 1.0),
    trades_beta=st.floats(0.0, 20.0), bf16=st.booleans(), channels_last=st.booleans(), compile=st.booleans(),
    ema=st.none() | st.floats(0.5, 0.9999), select_by=st.sampled_from(["val_robust", "val_clean", "last"]),
    val_attack=st.sampled_from(["pgd10", "fgsm", "cw20"]), val_samples=st.integers(1, 10**4),
    guard=st.booleans(), grad_clip=st.none() | st.floats(1e-3, 100.0), label_smoothing=st.floats(0.0, 0.99),
    warmup_epochs=st.floats(0.0, 10.0), seed=st.integers(0, 2**31), device=st.sampled_from(["auto", "cpu", "cuda"]),
).map(lambda kw: TrainConfig(**kw | ({"momentum": 0.9} if kw["nesterov"] and not kw["momentum"] else {})))

agent_configs = st.builds(
    AgentConfig, hidden=st.integers(1, 512), lr=st.floats(1e-6, 1.0), entropy=st.floats(0.0, 1.0),
    searches_per_update=st.integers(1, 64), evaluations=st.integers(1, 100), finetune_every=st.integers(0, 10),
    finetune_lr=st.floats(1e-6, 1.0), pool=st.integers(1, 8192), lengthscale=st.floats(0.01, 10.0),
    noise=st.floats(1e-4, 1.0), kappa=st.floats(0.0, 5.0), prior_trust=st.floats(0.0, 2.0))

buffers = st.builds(
    Buffers, datasets=st.lists(names, min_size=1, max_size=3).map(tuple),
    attacks=st.lists(attacks, min_size=1, max_size=4).map(tuple),
    eps_scales=st.lists(st.floats(0.01, 4.0), min_size=1, max_size=3).map(tuple),
    teachers=st.lists(names, min_size=1, max_size=3).map(tuple),
    budgets=st.lists(budgets, min_size=1, max_size=4).map(tuple),
    held_out=st.lists(tasks, max_size=3).map(tuple))

VALID = {Task: tasks, ProxyConfig: proxies, TrainConfig: train_configs, AgentConfig: agent_configs,
         Buffers: buffers}
CLASSES = list(VALID)


def _yaml_round_trip(d):
    return yaml.safe_load(yaml.safe_dump(d, sort_keys=False))


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_from_dict_round_trips_to_dict(cls, data):
    obj = data.draw(VALID[cls])
    d = to_dict(obj)
    assert from_dict(cls, d) == obj
    assert to_dict(from_dict(cls, d)) == d
    assert from_dict(cls, _yaml_round_trip(d)) == obj  # and through a YAML file's text


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_from_dict_partial_mapping_takes_defaults(cls, data):
    """Any subset of a valid mapping's keys parses (defaults fill the rest) or is a BadInput."""
    d = to_dict(data.draw(VALID[cls]))
    keys = data.draw(st.lists(st.sampled_from(sorted(d)), unique=True)) if d else []
    sub = {k: d[k] for k in keys}
    try:
        obj = from_dict(cls, sub)
    except BadInput:
        return  # e.g. nesterov without the default momentum's partner value: still a clean error
    out = to_dict(obj)
    assert {k: out[k] for k in sub} == sub
    default = to_dict(cls())
    assert {k: v for k, v in out.items() if k not in sub} == {k: v for k, v in default.items() if k not in sub}


@FAST
@given(st.integers(1, 10**12) | st.floats(1.0, 1e12))
def test_task_budget_may_be_a_number(budget):
    """`budget: 300000` in a task YAML means MACs, as `--budget 300000` does."""
    task = from_dict(Task, {"budget": budget})
    assert task.budget == str(budget)
    assert parse_macs(task.budget) == round(budget)
    assert from_dict(Buffers, {"budgets": [budget]}).budgets == (str(budget),)


# ---------------------------------------------------------------- junk never crashes

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_like = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _field_keyed(cls) -> st.SearchStrategy:
    """Mappings over the class's real keys (plus the odd unknown one) with junk values: they reach the
    per-field conversion and validation, where plain junk stops at the first check."""
    keys = [f.name for f in dataclasses.fields(cls)]
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), json_like, max_size=len(keys))


def _parses_or_bad_input(fn, value) -> None:
    try:
        fn(value)
    except BadInput as e:
        assert str(e) and "\n" not in str(e)  # one line


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_from_dict_on_junk_is_ok_or_bad_input(cls, data):
    junk = data.draw(json_like | _field_keyed(cls))
    _parses_or_bad_input(lambda v: from_dict(cls, v), junk)


ARCH_KEYS = ["depths", "widths", "channels", "blocks", "model", "arch", "depth_configs", "channel_configs",
             "block_types"]
# Values that are often *almost* right, so junk gets past the first checks to the deeper ones.
depth_el = st.integers(1, 4) | st.integers(-2, 70) | st.floats() | st.none() | st.text(max_size=2)
width_el = (st.sampled_from([0.5, 1, 1.25, 2]) | st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -0.0])
            | st.floats() | st.integers(-5, 100) | st.text(max_size=2))
block_el = st.sampled_from(["basic", "robust", "basic_block", "robust_res_block"]) | json_like


def _triples(el: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(el, min_size=3, max_size=3) | st.lists(el, max_size=5) | scalars


arch_value = {"depths": _triples(depth_el), "depth_configs": _triples(depth_el), "widths": _triples(width_el),
              "channels": _triples(depth_el | st.integers(1, 128)), "blocks": _triples(block_el),
              "block_types": _triples(block_el),
              "channel_configs": _triples(st.just(16) | st.integers(1, 128) | width_el) | st.lists(
                  st.integers(1, 64), min_size=4, max_size=4).map(lambda c: [16, *c[1:]])}


LAYOUTS = (("depths", "widths", "blocks"), ("depths", "channels", "blocks"),
           ("depth_configs", "channel_configs", "block_types"))


@st.composite
def arch_junk(draw):
    """An architecture mapping in one of the accepted layouts, with some values (or keys) wrong."""
    keys = list(draw(st.sampled_from(LAYOUTS)))
    keys = draw(st.lists(st.sampled_from(keys), unique=True, min_size=max(0, len(keys) - 1),
                         max_size=len(keys)))  # sometimes one is missing
    if draw(st.integers(0, 5)) == 0:
        keys.append(draw(st.sampled_from(ARCH_KEYS)))  # sometimes a stray key
    out = {k: draw(arch_value[k] if draw(st.integers(0, 5)) else json_like) for k in keys if k in arch_value}
    out.update({k: draw(json_like) for k in keys if k not in arch_value})
    wrap = draw(st.sampled_from([None, None, "model", "arch"]))
    return {wrap: out} if wrap else out


@FAST
@given(json_like | arch_junk())
def test_arch_from_dict_on_junk_is_ok_or_bad_input(junk):
    _parses_or_bad_input(Arch.from_dict, junk)


@FAST
@given(_triples(depth_el), _triples(width_el), _triples(block_el))
def test_arch_from_widths_on_junk_is_ok_or_bad_input(depths, widths, blocks):
    _parses_or_bad_input(lambda _: Arch.from_widths(depths, widths, blocks), None)


# ---------------------------------------------------------------- parse_macs

@FAST
@given(st.text(max_size=12) | st.from_regex(r"\s*-?[0-9.e+-]{0,8}[kKMGTx]?\s*", fullmatch=True)
       | st.floats().map(repr) | st.integers().map(str)
       | st.builds(lambda f, u: f"{f:.3f}{u}", st.floats(0, 2), st.sampled_from(["", "x", "k"])))
def test_parse_macs_on_any_text(text):
    for teacher in (None, 1_000_000):
        try:
            macs = parse_macs(text, teacher)
        except BadInput as e:
            assert "\n" not in str(e)
            continue
        assert isinstance(macs, int) and macs >= 1


@FAST
@given(st.floats() | st.integers() | st.booleans() | st.none())
def test_parse_macs_on_any_number(value):
    try:
        macs = parse_macs(value, 1000)
    except BadInput:
        return
    assert isinstance(macs, int) and macs >= 1
    assert not isinstance(value, bool) and value is not None and math.isfinite(value) and value > 0


@FAST
@given(st.integers(1, 10**6), st.sampled_from([("k", 10**3), ("M", 10**6), ("G", 10**9)]))
def test_parse_macs_units(n, unit):
    suffix, scale = unit
    assert parse_macs(f"{n}{suffix}") == n * scale
    assert parse_macs(f" {n} ") == n


# ---------------------------------------------------------------- Arch round trips

@st.composite
def valid_archs(draw):
    depths = draw(st.lists(st.integers(1, 12), min_size=3, max_size=3))
    sixteenths = draw(st.lists(st.integers(1, 64), min_size=3, max_size=3))
    widths = [k / 16 for k in sixteenths]                     # multiples of 1/16: valid at every stage
    blocks = [draw(st.sampled_from(["basic", "robust"])) if k * base // 16 >= 16 else "basic"
              for k, base in zip(sixteenths, STAGE_BASE)]
    return depths, widths, blocks


@FAST
@given(valid_archs(), st.none() | st.integers(1, 1000))
def test_arch_round_trips(spec, num_classes):
    depths, widths, blocks = spec
    arch = Arch.from_widths(depths, widths, blocks)
    assert list(arch.depths) == depths and list(arch.widths) == widths and list(arch.blocks) == blocks
    d = arch.to_dict()
    assert Arch.from_dict(d) == arch
    assert Arch.from_dict(_yaml_round_trip(d)) == arch
    assert Arch.from_dict({"arch": d}) == arch
    rr = arch.to_robustresnet(num_classes)
    assert Arch.from_dict(rr) == arch
    assert Arch.from_dict(_yaml_round_trip(rr)) == arch
    assert Arch.from_dict(rr["model"]) == arch
    assert Arch.from_dict({"depths": depths, "channels": list(arch.channels), "blocks": blocks}) == arch
    lineage = {"basic": "basic_block", "robust": "robust_res_block"}
    assert Arch.from_widths(depths, widths, [lineage[b] for b in blocks]) == arch


@FAST
@given(valid_archs(), st.integers(0, 2), st.integers(0, 10**6))
def test_arch_rejects_widths_off_the_channel_grid(spec, stage, odd):
    depths, widths, _ = spec
    widths = list(widths)
    widths[stage] = (2 * odd + 1) / (2 * STAGE_BASE[stage])  # half a channel
    with pytest.raises(BadInput, match="multiple of"):
        Arch.from_widths(depths, widths, ["basic"] * 3)


@FAST
@given(valid_archs())
def test_arch_key_is_unique_and_stable(spec):
    arch = Arch.from_widths(*spec)
    assert Arch.from_dict(arch.to_dict()).key() == arch.key()
    assert hash(Arch.from_dict(arch.to_dict())) == hash(arch)
