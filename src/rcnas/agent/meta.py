"""Meta-training: policy gradient over whole searches on task settings sampled from the buffers.

Each update draws one task setting (never a held-out one), runs `searches_per_update` searches of
`evaluations` distinct evaluations with the current policy (each with its own seed, all through the
same ask/tell driver and searcher that `rcnas search` uses), and takes one policy-gradient step on
their returns (`Agent.meta_update`). On the tabular benchmark an update costs milliseconds, so
thousands of searches fit in minutes; with the real proxy every evaluation lands in the store first.

[choice] Task shift (domain randomisation, on the tables only): in a share of the updates
(`shift_share`) every search of the update sees the table's rewards plus a random additive function
of the candidates' shapes (a random linear function of their kernel features, scaled to `shift` times
the spread of the task's rewards). The training tables agree with each other far more than a new
dataset agrees with them (PGD Spearman over shared shapes 0.8-0.9 among the digits tables, 0.25-0.65
to Fashion-MNIST), so without it the agent learns that its prior is always right and follows it when
it is wrong; with it, it learns to weigh what a search has seen. The sweep that chose it (digits ->
MNIST-5k validation split; the Fashion-MNIST tables never looked at) is in
bench/experiments/task-shift/ with its raw results.

Checkpoints every `checkpoint_every` updates (every update unless on the tables) and at the end;
rerunning the same command resumes from the last checkpoint and ends with the same agent as an
uninterrupted run (every update's task and seeds derive from (seed, update index); evaluations come
back from the store).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rcnas.agent.agent import Agent, AgentConfig
from rcnas.agent.searcher import AgentSearcher
from rcnas.config import to_dict
from rcnas.device import torch_threads
from rcnas.errors import BadInput
from rcnas.env.features import kernel_features
from rcnas.search.driver import SearchContext, run_search
from rcnas.search.evaluator import Evaluator
from rcnas.search.store import Store
from rcnas.seeding import check_seed
from rcnas.tasks import Buffers, resolve

SEED_STRIDE = 1_000_003


@dataclass
class ShiftedContext(SearchContext):
    """Meta-training only: each reward plus a fixed amount per architecture (the task shift)."""
    shift: dict = field(default_factory=dict)

    def reward(self, record) -> float:
        return super().reward(record) + self.shift.get(record.arch, 0.0)


def task_shift(ctx: SearchContext, size: float, weights: np.ndarray) -> dict:
    """{arch: shift} over the candidates that fit: the linear function `weights` (random) of their
    kernel features, standardised, times `size` x the standard deviation of their rewards (read from
    the table)."""
    states = ctx.feasible_states() or []
    if len(states) < 2 or size == 0:
        return {}
    archs = [ctx.space.arch(s) for s in states]
    features = kernel_features(ctx, states)
    direction = (features - features.mean(0)) @ weights[: features.shape[1]]
    direction = direction / (direction.std() + 1e-12)
    rewards = np.array([ctx.reward(ctx.evaluator.evaluate(ctx.task, a, ctx.seed)) for a in archs])
    return dict(zip(archs, (size * rewards.std() * direction).tolist()))


def search_return(curve: list[float], evaluations: int) -> float:
    """The area under a search's best-so-far curve: the mean best reward after 1..k evaluations (a
    search that ran out of candidates keeps its last best)."""
    curve = curve + [curve[-1]] * (evaluations - len(curve))
    return sum(curve[:evaluations]) / evaluations


def meta_train(buffers: Buffers, out: str | Path, evaluator: Evaluator, *, episodes: int = 4000, seed: int = 0,
               agent_cfg: AgentConfig | None = None, store: str | Path | None = None, reward: str = "accuracy",
               data_dir: str | None = None, settings: dict | None = None, checkpoint_every: int | None = None,
               progress: bool = True) -> Agent:
    """Meta-train an agent into `out` (an episode = one whole search); returns it. Checkpoints every
    `checkpoint_every` updates (default: every update with a real evaluator, whose updates cost minutes;
    every 25 on the tables, whose updates cost milliseconds).

    An ensemble (`agent_cfg.members` > 1) is that many single agents, meta-trained one after the other
    from seeds seed, seed+1, ... into `out/members/<i>` (each resumes on its own), then joined in `out`.
    [choice] Meta-training runs on one CPU thread: it is chaotic in floating-point noise (another
    reduction order ends as another agent), so a fixed thread count makes a seed give the same agent on
    every machine; the networks are too small to gain from more."""
    cfg = agent_cfg or AgentConfig()
    check_seed(seed, "meta-train --seed")
    check_seed(seed + cfg.members - 1, "meta-train --seed (+ members - 1)")
    if not 1 <= episodes <= 10**7:
        raise BadInput(f"meta-train needs 1 <= --episodes <= 10^7, got {episodes}")
    out = Path(out)
    with torch_threads(1):
        if cfg.members == 1:
            return _meta_train_one(buffers, out, evaluator, episodes, seed, cfg, store, reward, data_dir, settings,
                                   checkpoint_every, progress)
        single = replace(cfg, members=1)
        store = store or (out / "store.sqlite" if evaluator.name != "table" else None)  # one store for all
        members = [_meta_train_one(buffers, out / "members" / str(i), evaluator, episodes, seed + i, single, store,
                                   reward, data_dir, settings, checkpoint_every, progress)
                   for i in range(cfg.members)]
    settings = _settings(buffers, evaluator, seed, cfg, reward, settings)
    agent = Agent.ensemble(members)
    agent.save(out, extra={"settings": settings, "member_seeds": [seed + i for i in range(cfg.members)]})
    return agent


def _settings(buffers: Buffers, evaluator: Evaluator, seed: int, cfg: AgentConfig, reward: str,
              extra: dict | None) -> dict:
    """What an agent directory records it was meta-trained with (a rerun must match it to resume)."""
    return (extra or {}) | {"buffers": to_dict(buffers), "seed": seed, "evaluator": evaluator.proxy_key,
                            "reward": reward, "agent_config": to_dict(cfg)}


def _meta_train_one(buffers: Buffers, out: Path, evaluator: Evaluator, episodes: int, seed: int, cfg: AgentConfig,
                    store: str | Path | None, reward: str, data_dir: str | None, settings: dict | None,
                    checkpoint_every: int | None, progress: bool) -> Agent:
    from rcnas.data import dataset_info
    if checkpoint_every is None:
        checkpoint_every = 25 if evaluator.name == "table" else 1
    settings = _settings(buffers, evaluator, seed, cfg, reward, settings)
    total = max(1, episodes // cfg.searches_per_update)
    if (out / "agent.json").is_file():
        agent, meta = Agent.load(out)
        if meta.get("settings") != settings:
            raise BadInput(f"{out} holds an agent meta-trained with other settings; use a new --out or delete it")
        history = meta.get("history", [])[: agent.updates]
    else:
        agent, history = Agent(cfg, seed=seed), []
    st = Store(Path(store) if store else (out / "store.sqlite" if evaluator.name != "table" else ":memory:"))
    default_eps = {} if buffers.tables else {d: dataset_info(d, data_dir).default_eps for d in buffers.datasets}
    tasks = buffers.all_tasks(default_eps)
    if not tasks:
        raise BadInput("buffers: every task setting is held out; add datasets, attacks, teachers or budgets")
    resolved: dict = {}

    def context(rt, space, floor: float, shift: dict | None = None) -> SearchContext:
        return ShiftedContext(rt, space, evaluator, st, seed=seed, reward_name=reward,
                              min_macs=math.ceil(floor * rt.budget_macs), shift=shift or {})
    shift_rng = np.random.default_rng(seed)  # one stream for the run (replayed from update 0 on resume)
    shift_draws = [(float(shift_rng.random()), shift_rng.standard_normal(64)) for _ in range(total)]
    bar = tqdm(range(agent.updates, total), initial=agent.updates, total=total, desc="meta-train",
               disable=not progress)
    for update in bar:
        rng = random.Random(seed * SEED_STRIDE + update)
        for _ in range(1000):  # a task whose budget (and floor) leaves fewer than 2 candidates teaches nothing
            task, floor = rng.choice(tasks), rng.choice(buffers.floors)
            if task not in resolved:
                rt = resolve(task, data_dir)
                resolved[task] = (rt, evaluator.space(rt))
            rt, space = resolved[task]
            feasible = context(rt, space, floor).feasible_states()
            if feasible is None or len(feasible) >= 2:
                break
        shift = {}
        coin, direction = shift_draws[update]
        if evaluator.name == "table" and coin < cfg.shift_share:
            shift = task_shift(context(rt, space, floor), cfg.shift, direction)
        rollouts, returns, best = [], [], []
        for _ in range(cfg.searches_per_update):
            ctx = context(rt, space, floor, shift)
            searcher = AgentSearcher(ctx, seed=rng.randrange(2**31), agent=agent, learn=False, greedy=False)
            run_search(searcher, cfg.evaluations, progress=False)
            curve = searcher.episode.curve()
            rollouts.append((searcher.episode, searcher.steps))
            returns.append(search_return(curve, cfg.evaluations))
            best.append(curve[-1])
        stats = agent.meta_update(rollouts, returns)
        history.append({"update": update + 1, "task": task.key(), "floor": floor, "shifted": bool(shift),
                        "best_reward": max(best), **stats})
        if (update + 1) % checkpoint_every == 0 or update + 1 == total:
            agent.save(out, extra={"settings": settings, "history": history})
        bar.set_postfix(ret=f"{stats['charts/return']:.3f}", task=f"{task.attack}/{task.teacher}/{task.budget}")
    if agent.updates >= total and not (out / "agent.json").is_file():
        agent.save(out, extra={"settings": settings, "history": history})
    return agent


__all__ = ["ShiftedContext", "meta_train", "search_return", "task_shift"]
