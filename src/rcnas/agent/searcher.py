"""The agent as a searcher (`--searcher rcnas`), behind the same ask/tell driver as every baseline.

Each ask is one whole candidate among those left (never one already proposed): sampled from the
agent's policy, or its highest-scored one when the agent's config says `greedy` (the shipped agent's
does; meta-training always samples); each tell feeds the result to the within-search evidence, and every
`finetune_every` evaluations the agent (its own copy: the meta-trained one is left as it is) takes one
policy-gradient step from a fresh optimiser: the paper's fine-tuning on a task setting it never saw.
"""
from __future__ import annotations

import torch

from rcnas.agent.agent import Agent, Step
from rcnas.env.episode import SearchEpisode
from rcnas.search.driver import SearchContext, Searcher
from rcnas.search.searchers import SEARCHERS, candidate_states
from rcnas.search.store import Record
from rcnas.space.arch import Arch


@SEARCHERS.register("rcnas")
class AgentSearcher(Searcher):
    name = "rcnas"
    batch = 1  # each choice uses every result before it

    def __init__(self, ctx: SearchContext, seed: int = 0, agent: Agent | None = None, learn: bool = True,
                 greedy: bool | None = None) -> None:
        super().__init__(ctx, seed)
        agent = agent if agent is not None else Agent(seed=seed)
        self.agent = agent.copy() if learn else agent
        self.learn = learn and self.agent.cfg.finetune_every > 0
        self.greedy = self.agent.cfg.greedy if greedy is None else greedy
        states = candidate_states(ctx, seed, self.agent.cfg.pool)
        self.episode = SearchEpisode(ctx, states, evaluations=len(states))
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = self.agent.fine_tuner() if self.learn else None
        self.steps: list[Step] = []
        self.history: list[dict[str, float]] = []

    def ask(self) -> Arch:
        step = self.agent.act(self.episode, self.generator, greedy=self.greedy)
        self.steps.append(step)
        return self.episode.archs[step.choice]

    def tell(self, arch: Arch, reward: float, record: Record) -> None:
        self.episode.observe(arch, reward)
        every = self.agent.cfg.finetune_every
        if self.optimizer is not None and self.episode.n % every == 0:
            stats = self.agent.fine_tune(self.episode, self.optimizer)
            if stats:
                self.history.append(stats)

    def finished(self) -> bool:
        return not self.episode.available.any()


__all__ = ["AgentSearcher"]
