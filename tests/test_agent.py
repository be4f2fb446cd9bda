"""The agent: acting on whole candidates without replacement, the within-search evidence, fine-tuning
from a fresh optimiser, meta-training on a table (it learns; it resumes), and its files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rcnas.agent import Agent, AgentConfig, AgentSearcher
from rcnas.agent.agent import Step
from rcnas.agent.adapt import acquisition
from rcnas.agent.meta import ShiftedContext, meta_train, search_return, task_shift
from rcnas.errors import BadInput
from rcnas.search.driver import SearchContext, run_search
from rcnas.search.store import Store
from rcnas.search.table import TableEvaluator
from rcnas.tasks import Buffers, Task, resolve
from rcnas.testing import toy_context

TABLE = "digits_wrn-28-2_eps0.15"  # shipped: real proxy numbers, 216 networks


def table_context(attack: str = "pgd", budget: str = "0.5x", store=":memory:") -> SearchContext:
    task = resolve(Task("digits", attack, "wrn-28-2", budget))
    ev = TableEvaluator()
    return SearchContext(task, ev.space(task), ev, Store(store), reward_name="accuracy")


def test_the_agent_proposes_whole_candidates_within_budget_and_never_twice() -> None:
    ctx = table_context(budget="0.4x")
    result = run_search(AgentSearcher(ctx, seed=0), 30, progress=False)
    archs = [t.arch for t in result.trials]
    assert len(archs) == len(set(archs)) == 30 == result.new_evaluations
    assert all(t.record.macs <= ctx.task.budget_macs for t in result.trials)


def test_a_search_is_deterministic_for_a_seed_and_differs_across_seeds() -> None:
    runs = [run_search(AgentSearcher(toy_context(), seed=s), 6, progress=False) for s in (0, 0, 1)]
    assert [t.arch for t in runs[0].trials] == [t.arch for t in runs[1].trials]
    assert [t.arch for t in runs[0].trials] != [t.arch for t in runs[2].trials]


def test_evidence_favours_the_neighbours_of_good_results() -> None:
    """Four candidates on a line; a high reward was seen at 0 and a low one at 3: with a flat prior, the
    unseen neighbour of the good one (1) ranks above the neighbour of the bad one (2)."""
    kernel = np.array([[0.0], [0.2], [0.8], [1.0]])
    available = np.array([False, True, True, False])
    ucb = acquisition(np.zeros(4), kernel, np.array([0, 3]), np.array([0.9, 0.1]), available,
                      lengthscale=0.3, kappa=0.0)
    assert ucb[1] > ucb[2] and ucb[0] == ucb[3] == 0.0
    # with a prior that ranks 2 first and no evidence against it, the prior decides
    prior = np.array([0.0, 0.0, 5.0, 0.0])
    ucb = acquisition(prior, kernel, np.array([0]), np.array([0.5]), available, lengthscale=0.3, kappa=0.0)
    assert ucb[2] > ucb[1]


def test_evidence_is_weighed_in_units_of_the_prior_spread_so_a_sharp_prior_still_listens() -> None:
    """Strong evidence for candidate 0 (1.5 std) against a prior that puts it one step below candidate 1:
    the choice follows the evidence whatever the prior's scale (on absolute scales, a prior 100x sharper
    ignored it); before the first evaluation the prior alone decides."""
    agent = Agent(seed=0)
    evidence = np.array([1.5, -0.5, -0.5, -0.5], dtype=np.float32)
    for scale in (1.0, 100.0):
        scores = torch.tensor([0.0, 1.0, 0.0, -1.0]) * scale
        after = Step(3, np.ones(4, dtype=bool), evidence, -1)
        before = Step(0, np.ones(4, dtype=bool), np.zeros(4, dtype=np.float32), -1)
        assert int(agent._logits(scores, after).argmax()) == 0
        assert int(agent._logits(scores, before).argmax()) == 1


def test_fine_tuning_changes_a_copy_from_a_fresh_optimiser() -> None:
    agent = Agent(seed=0)
    before = {k: v.clone() for k, v in agent.net.state_dict().items()}
    searcher = AgentSearcher(table_context(), seed=0, agent=agent)
    run_search(searcher, 6, progress=False)
    assert searcher.agent is not agent and len(searcher.history) == 5  # an update after every evaluation from the 2nd
    assert all(torch.equal(v, agent.net.state_dict()[k]) for k, v in before.items())  # the given agent untouched
    assert not all(torch.equal(v, searcher.agent.net.state_dict()[k]) for k, v in before.items())
    assert searcher.optimizer is not agent.opt and not agent.opt.state  # meta-training's Adam state never used


def test_fine_tuning_raises_the_scores_of_the_better_candidates() -> None:
    """After a scratch agent's 8-evaluation search, the candidates it found above the median score higher
    than those below, in every seed, and scores and rewards correlate on average."""
    correlations = []
    for seed in range(4):
        ctx = table_context()
        searcher = AgentSearcher(ctx, seed=seed, agent=Agent(seed=0))
        run_search(searcher, 8, progress=False)
        ep, agent = searcher.episode, searcher.agent
        seen = [ep.position[ctx.space.arch(s)] for s, _ in ep.observed]
        rewards = np.array([r for _, r in ep.observed])
        with torch.no_grad():
            scores = agent.scores(ep).numpy()[seen]
        better = rewards > np.median(rewards)
        assert scores[better].mean() > scores[~better].mean()
        correlations.append(np.corrcoef(scores, rewards)[0, 1])
    assert np.mean(correlations) > 0.5


def test_search_return_is_the_area_under_the_best_so_far_curve() -> None:
    assert search_return([0.2, 0.5, 0.5], 3) == pytest.approx(0.4)
    assert search_return([0.2, 0.5], 4) == pytest.approx((0.2 + 0.5 * 3) / 4)  # ran out: keeps its best


@pytest.mark.slow
def test_meta_training_on_a_table_improves_the_searches_and_resumes_exactly(tmp_path) -> None:
    """60 updates of 4 searches on the shipped table's PGD and CW settings (seconds): the trained agent's
    mean return over fresh seeds beats the untrained one's; a run stopped at 30 updates and resumed
    ends with the same weights as one run straight through."""
    buffers = Buffers(tables=(TABLE,), attacks=("pgd", "cw"), budgets=("0.4x", "0.6x"))
    cfg = AgentConfig(searches_per_update=4, evaluations=5)
    ev = TableEvaluator()
    trained = meta_train(buffers, tmp_path / "a", ev, episodes=240, agent_cfg=cfg, checkpoint_every=10,
                         progress=False)
    assert trained.updates == 60

    def mean_return(agent: Agent) -> float:
        out = []
        for attack in ("pgd", "cw"):
            for seed in range(100, 110):
                s = AgentSearcher(table_context(attack, "0.5x"), seed=seed, agent=agent, learn=False)
                run_search(s, 5, progress=False)
                out.append(search_return(s.episode.curve(), 5))
        return float(np.mean(out))
    assert mean_return(trained) > mean_return(Agent(cfg, seed=0)) + 0.01

    meta_train(buffers, tmp_path / "b", ev, episodes=120, agent_cfg=cfg, checkpoint_every=10, progress=False)
    resumed = meta_train(buffers, tmp_path / "b", ev, episodes=240, agent_cfg=cfg, checkpoint_every=10,
                         progress=False)
    assert resumed.updates == 60
    for k, v in trained.net.state_dict().items():
        assert torch.equal(v, resumed.net.state_dict()[k]), k
    with pytest.raises(BadInput, match="other settings"):
        meta_train(Buffers(tables=(TABLE,), attacks=("clean",)), tmp_path / "b", ev, episodes=8, agent_cfg=cfg,
                   progress=False)


def test_a_task_shift_is_a_reproducible_linear_function_of_shape_sized_by_the_rewards_spread() -> None:
    ctx = table_context()
    shift = task_shift(ctx, 2.0, np.random.default_rng(0).standard_normal(64))
    feasible = ctx.feasible_states()
    assert len(shift) == len(feasible) > 100
    archs = [ctx.space.arch(s) for s in feasible]
    rewards = np.array([ctx.reward(ctx.evaluator.evaluate(ctx.task, a, 0)) for a in archs])
    values = np.array([shift[a] for a in archs])
    assert values.std() == pytest.approx(2.0 * rewards.std(), rel=1e-6) and abs(values.mean()) < 1e-9
    from rcnas.env.features import kernel_features
    features = np.c_[kernel_features(ctx, feasible), np.ones(len(feasible))]
    residual = values - features @ np.linalg.lstsq(features, values, rcond=None)[0]
    assert np.abs(residual).max() < 1e-9                       # linear in the candidates' shapes
    assert shift == task_shift(ctx, 2.0, np.random.default_rng(0).standard_normal(64)) != task_shift(ctx, 2.0, np.random.default_rng(1).standard_normal(64))
    assert task_shift(ctx, 0.0, np.ones(64)) == {}
    shifted = ShiftedContext(ctx.task, ctx.space, ctx.evaluator, Store(":memory:"), reward_name="accuracy", shift=shift)
    record = ctx.evaluator.evaluate(ctx.task, archs[0], 0)
    assert shifted.reward(record) == pytest.approx(ctx.reward(record) + shift[archs[0]])


def test_meta_training_shifts_the_share_of_updates_it_is_told_to(tmp_path) -> None:
    buffers = Buffers(tables=(TABLE,), attacks=("pgd",), budgets=("0.5x",))
    shares = {}
    for share in (0.0, 0.5, 1.0):
        meta_train(buffers, tmp_path / str(share), TableEvaluator(), episodes=80, progress=False,
                   agent_cfg=AgentConfig(searches_per_update=2, evaluations=3, shift_share=share))
        shares[share] = np.mean([h["shifted"] for h in Agent.load(tmp_path / str(share))[1]["history"]])
    assert shares[0.0] == 0.0 and shares[1.0] == 1.0 and 0.25 < shares[0.5] < 0.75


def test_meta_training_never_samples_a_held_out_task(tmp_path) -> None:
    held = Task("digits", "pgd", "wrn-28-2", "0.5x", 0.15)
    buffers = Buffers(tables=(TABLE,), attacks=("pgd",), budgets=("0.5x", "0.4x"), held_out=(held,))
    agent = meta_train(buffers, tmp_path / "a", TableEvaluator(), episodes=16,
                       agent_cfg=AgentConfig(searches_per_update=2, evaluations=3), progress=False)
    _, meta = Agent.load(tmp_path / "a")
    assert agent.updates == 8 and {h["task"] for h in meta["history"]} == {Task("digits", "pgd", "wrn-28-2", "0.4x", 0.15).key()}


def test_agent_save_load_round_trip_and_corrupt_files(tmp_path) -> None:
    agent = Agent(AgentConfig(hidden=16), seed=0)
    run_search(AgentSearcher(table_context(), seed=0, agent=agent), 4, progress=False)
    agent.save(tmp_path / "a")
    loaded, _ = Agent.load(tmp_path / "a")
    picks = [[t.arch for t in run_search(AgentSearcher(table_context(), seed=5, agent=a), 4, progress=False).trials]
             for a in (agent, loaded)]
    assert picks[0] == picks[1] and loaded.cfg.hidden == 16
    (tmp_path / "a" / "agent.safetensors").write_bytes(b"garbage")
    with pytest.raises(BadInput, match="missing or corrupt"):
        Agent.load(tmp_path / "a")
    with pytest.raises(BadInput, match="hidden"):
        AgentConfig(hidden=0)


def test_the_shipped_agent_loads_and_names_its_training_tables() -> None:
    from rcnas.api import PRETRAINED, load_agent
    from rcnas.io import read_json
    agent, info = load_agent("pretrained")
    tables = read_json(PRETRAINED / "agent.json")["settings"]["buffers"]["tables"]
    assert agent.updates > 0 and info["meta_updates"] == agent.updates
    assert tables and not any(t.startswith("fashion") for t in tables)  # Fashion-MNIST is held out


def test_the_search_package_never_imports_the_agent() -> None:
    import ast
    from pathlib import Path

    import rcnas.search
    for path in Path(rcnas.search.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith(("rcnas.agent", "rcnas.env")) for n in names), (path.name, names)


def test_an_ensemble_averages_standardised_scores_so_no_sharp_member_outvotes_the_others(tmp_path) -> None:
    """Two members that rank the candidates in opposite orders, one 100x sharper: the raw mean would
    follow the sharp one; the ensemble weighs them equally (a tie), at the members' mean spread."""
    episode = AgentSearcher(table_context(), seed=0).episode
    a, b = Agent(AgentConfig(hidden=8), seed=0), Agent(AgentConfig(hidden=8), seed=1)
    for agent, scale in ((a, 1.0), (b, -100.0)):   # heads start at zero: give each a ranking by MACs/budget
        head = agent.net.heads[0]
        torch.nn.init.zeros_(head.weight)
        head.bias.data.zero_()
        agent.net.stage_mlp[0][0].weight.data.zero_()
        agent.net.stage_mlp[0][0].bias.data.zero_()
        agent.net.stage_mlp[0][0].weight.data[0, -episode.features[1].shape[1]] = 1.0   # MACs / budget
        head.weight.data[0, 0] = scale
    ens = Agent.ensemble([a, b])
    sa, sb, se = (x.scores(episode).detach() for x in (a, b, ens))
    assert torch.corrcoef(torch.stack([sa, sb]))[0, 1] < -0.99          # opposite rankings
    assert float(se.std()) < 1e-4 * float(sb.std())                     # they cancel: no member decides
    ens.save(tmp_path / "e")
    loaded, meta = Agent.load(tmp_path / "e")
    assert meta["config"]["members"] == 2 and torch.equal(loaded.scores(episode).detach(), se)
    with pytest.raises(BadInput, match="single agents"):
        Agent.ensemble([ens, a])


def test_meta_training_an_ensemble_trains_each_member_from_its_own_seed_and_resumes(tmp_path) -> None:
    buffers = Buffers(tables=(TABLE,), attacks=("pgd",), budgets=("0.5x",))
    cfg = AgentConfig(searches_per_update=2, evaluations=3, hidden=8)
    ens = meta_train(buffers, tmp_path / "e", TableEvaluator(), episodes=8, seed=3, progress=False,
                     agent_cfg=AgentConfig(searches_per_update=2, evaluations=3, hidden=8, members=2))
    single = meta_train(buffers, tmp_path / "s", TableEvaluator(), episodes=8, seed=4, agent_cfg=cfg, progress=False)
    member = ens.net.members[1].state_dict()
    assert all(torch.equal(v, member[k]) for k, v in single.net.state_dict().items())   # member 1 = seed 4
    assert not torch.equal(ens.net.members[0].heads[0].weight, ens.net.members[1].heads[0].weight)
    again = meta_train(buffers, tmp_path / "e", TableEvaluator(), episodes=8, seed=3, progress=False,
                       agent_cfg=AgentConfig(searches_per_update=2, evaluations=3, hidden=8, members=2))
    assert all(torch.equal(v, again.net.state_dict()[k]) for k, v in ens.net.state_dict().items())
    assert Agent.load(tmp_path / "e")[1]["member_seeds"] == [3, 4]
