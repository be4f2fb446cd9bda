"""The RC-NAS agent: a policy over whole candidates, its two levels of learning, and its files.

Acting: the network scores every candidate left in the search; the policy is the softmax of
score + trust(n) * spread(scores) * evidence, where the evidence is what the evaluations seen so far
say about each candidate (`rcnas.agent.adapt`); the chosen candidate (sampled, or the most probable
when `greedy`) leaves the pool: never a repeat. The network is one `ScoreNet`, or an `Ensemble` of
several meta-trained from different seeds (`members`).

Learning (policy gradient throughout, as the paper):
- meta-training (`meta_update`): an episode is a whole k-evaluation search; its return is the area
  under its best-so-far curve (the mean best reward after 1..k evaluations). Returns are compared
  within a batch of searches on one task setting (advantage = return standardised over the batch),
  so every task weighs the same whatever its reward scale.
- fine-tuning (`fine_tune`): within one search, a few REINFORCE updates (the paper's `--M`) on the
  candidates evaluated so far (advantage = reward standardised within the search), from a fresh
  optimiser: the meta-training optimiser's state never leaks into a new task.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rcnas.agent.adapt import acquisition
from rcnas.agent.policy import Ensemble, ScoreNet
from rcnas.config import from_dict
from rcnas.env.episode import SearchEpisode
from rcnas.errors import BadInput
from rcnas.io import atomic_write, read_json, write_json

AGENT_FORMAT = 2
META_KEY = "rcnas.agent"  # the agent.json metadata, also in the safetensors header


@dataclass(frozen=True)
class AgentConfig:
    hidden: int = 64                 # width of the encoder, LSTM and stage MLPs
    lr: float = 3e-3                 # meta-training Adam learning rate
    entropy: float = 0.003           # entropy bonus weight (mean entropy per choice)
    searches_per_update: int = 8     # meta-training: searches per policy update, all on one task setting
    evaluations: int = 10            # meta-training: distinct evaluations per search (the episode)
    finetune_every: int = 1          # fine-tuning: an update after every this many evaluations (0: never)
    finetune_lr: float = 3e-3        # fine-tuning: a fresh Adam per search
    pool: int = 1024                 # candidates scored per search when the space is too large to enumerate
    lengthscale: float = 0.4         # the within-search Gaussian process (rcnas.agent.adapt)
    noise: float = 0.1
    kappa: float = 0.5
    prior_trust: float = 0.5
    linear: float = 0.7              # the linear share of its kernel's variance
    rank_loss: float = 0.0           # weight of the auxiliary pairwise ranking loss on what each search evaluated
    shift: float = 2.0               # meta-training on the tables: size of the random task shift (rcnas.agent.meta)
    shift_share: float = 0.5         # ... and the share of updates whose task setting is shifted
    members: int = 1                 # meta-training draws (seeds seed..seed+members-1) acting as one (policy.Ensemble)
    greedy: bool = False             # searching: take the highest-scored candidate left (meta-training always samples)

    def __post_init__(self) -> None:
        for name in ("hidden", "searches_per_update", "evaluations", "pool"):
            if not 1 <= getattr(self, name) <= 1_000_000:
                raise BadInput(f"agent {name} must be in 1..1000000, got {getattr(self, name)}")
        if not 1 <= self.members <= 64:
            raise BadInput(f"agent members must be in 1..64, got {self.members}")
        if not 0 <= self.finetune_every <= 1_000_000:
            raise BadInput(f"agent finetune_every must be in 0..1000000, got {self.finetune_every}")
        for name in ("lr", "finetune_lr", "lengthscale", "noise"):
            if not 0 < getattr(self, name) < math.inf:
                raise BadInput(f"agent {name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.linear <= 1:
            raise BadInput(f"agent linear must be in [0, 1], got {self.linear}")
        if not 0 <= self.shift_share <= 1:
            raise BadInput(f"agent shift_share must be in [0, 1], got {self.shift_share}")
        for name in ("entropy", "kappa", "prior_trust", "rank_loss", "shift"):
            if not 0 <= getattr(self, name) < math.inf:
                raise BadInput(f"agent {name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Step:
    """One choice, as the update needs it to recompute its log-probability with gradients."""
    n: int                      # evaluations seen before the choice
    available: np.ndarray       # (N,) bool: the candidates left
    evidence: np.ndarray        # (N,) float32: the standardised within-search evidence (0 when n = 0)
    choice: int


def ranking_loss(episode: SearchEpisode, scores: torch.Tensor) -> torch.Tensor:
    """[choice] RankNet's pairwise logistic loss between the scores of the candidates a search evaluated
    and the rewards they got: the agent learns from every result it saw, not only from its return."""
    seen, observed = episode.evaluated()
    seen, rewards = torch.from_numpy(seen), torch.from_numpy(observed)
    better = rewards[:, None] > rewards[None, :] + 1e-9
    if not better.any():
        return torch.zeros(())
    diff = scores[seen][:, None] - scores[seen][None, :]
    return torch.nn.functional.softplus(-diff[better]).mean()


class Agent:
    def __init__(self, cfg: AgentConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or AgentConfig()
        self.net: ScoreNet | Ensemble = (self._score_net(seed) if self.cfg.members == 1 else
                                         Ensemble([self._score_net(seed + i) for i in range(self.cfg.members)]))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr)
        self.updates = 0
        self._cache: tuple[np.ndarray, int, torch.Tensor] | None = None  # (features, version, scores)
        self._version = 0

    def _score_net(self, seed: int) -> ScoreNet:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return ScoreNet(self.cfg.hidden)

    @classmethod
    def ensemble(cls, members: list[Agent]) -> Agent:
        """One agent acting with the score networks of `members` (single agents of one configuration,
        each meta-trained from its own seed); its optimiser starts fresh."""
        if len({a.cfg for a in members}) != 1 or members[0].cfg.members != 1:
            raise BadInput("an ensemble is made of single agents (members: 1) with one configuration")
        agent = cls(replace(members[0].cfg, members=len(members)))
        for mine, theirs in zip(agent.net.members, members):
            mine.load_state_dict(theirs.net.state_dict())
        agent.updates = sum(a.updates for a in members)
        return agent

    def copy(self) -> Agent:
        """An independent agent with these weights (fine-tuning one search leaves this one as it is)."""
        other = copy.deepcopy(self)
        other._cache = None
        return other

    # --- acting --------------------------------------------------------------------------------
    def scores(self, episode: SearchEpisode) -> torch.Tensor:
        stages, glob = episode.features
        return self.net(torch.from_numpy(stages), torch.from_numpy(glob))

    @torch.no_grad()
    def _prior(self, episode: SearchEpisode) -> torch.Tensor:
        """The current scores of the episode's candidates (kept while the weights and candidates stay)."""
        features = episode.features[0]
        if self._cache is None or self._cache[0] is not features or self._cache[1] != self._version:
            self._cache = (features, self._version, self.scores(episode))
        return self._cache[2]

    def evidence(self, episode: SearchEpisode, prior: np.ndarray) -> np.ndarray:
        if episode.n == 0:
            return np.zeros(len(prior), dtype=np.float32)
        seen, rewards = episode.evaluated()
        c = self.cfg
        return acquisition(prior.astype(np.float64), episode.kernel, seen, rewards, episode.available,
                           lengthscale=c.lengthscale, noise=c.noise, kappa=c.kappa,
                           prior_trust=c.prior_trust, linear=c.linear).astype(np.float32)

    @torch.no_grad()
    def act(self, episode: SearchEpisode, generator: torch.Generator, greedy: bool = False) -> Step:
        """Choose one of the candidates left in `episode`."""
        if not episode.available.any():
            raise BadInput("every candidate of this search has been evaluated")
        prior = self._prior(episode)
        step = Step(episode.n, episode.available.copy(), self.evidence(episode, prior.numpy()), -1)
        logits = self._logits(prior, step)
        probs = torch.softmax(logits, 0)
        choice = int(probs.argmax()) if greedy else int(torch.multinomial(probs, 1, generator=generator))
        return Step(step.n, step.available, step.evidence, choice)

    def _logits(self, scores: torch.Tensor, step: Step) -> torch.Tensor:
        """score + trust(n) * spread * evidence: the evidence (standardised) is weighed in units of the
        spread of the scores left, so however sharp meta-training made the prior, trust(n) ~ 1 means
        "one standard deviation of what was seen moves a candidate as much as one of the prior"
        (on absolute scales a sharp prior drowned the evidence: trust stayed at ~1.3 against a score
        range of ~40, and the within-search model changed no choice)."""
        available = torch.from_numpy(step.available)
        if step.n == 0 or int(available.sum()) < 2:
            return scores.masked_fill(~available, -math.inf)
        spread = scores.detach()[available].std().clamp(min=1.0)  # a flat (scratch) prior: one logit unit
        logits = scores + self.net.trust_at(step.n) * spread * torch.from_numpy(step.evidence)
        return logits.masked_fill(~available, -math.inf)

    def log_prob(self, episode: SearchEpisode, steps: list[Step],
                 scores: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over the choices of log pi, and the mean entropy per choice (with gradients)."""
        scores = self.scores(episode) if scores is None else scores
        logp, ent = torch.zeros(()), torch.zeros(())
        for step in steps:
            lp = torch.log_softmax(self._logits(scores, step), 0)
            logp = logp + lp[step.choice]
            p = lp.exp()
            ent = ent - (p * lp.masked_fill(~torch.from_numpy(step.available), 0.0)).sum()
        return logp, ent / max(1, len(steps))

    # --- learning ------------------------------------------------------------------------------
    def meta_update(self, rollouts: list[tuple[SearchEpisode, list[Step]]], returns: list[float]) -> dict[str, float]:
        """One policy-gradient step on a batch of whole searches of one task setting."""
        r = torch.tensor(returns, dtype=torch.float64)
        adv = ((r - r.mean()) / (r.std() + 1e-8) if len(r) > 1 and float(r.std()) > 1e-12
               else torch.zeros_like(r)).float()
        loss, ents = torch.zeros(()), []
        shared: dict[int, torch.Tensor] = {}  # searches of one task setting share their candidates' features
        for (episode, steps), a in zip(rollouts, adv):
            key = id(episode.features[0])
            if key not in shared:
                shared[key] = self.scores(episode)
            logp, ent = self.log_prob(episode, steps, shared[key])
            loss = loss - a * logp - self.cfg.entropy * ent
            if self.cfg.rank_loss > 0:
                loss = loss + self.cfg.rank_loss * ranking_loss(episode, shared[key])
            ents.append(float(ent.detach()))
        loss = loss / len(rollouts)
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
        self.opt.step()
        self.updates += 1
        self._version += 1
        return {"losses/policy": float(loss.detach()), "charts/return": float(r.mean()),
                "charts/entropy": float(np.mean(ents)), "charts/trust": float(self.net.trust_at(5).detach())}

    def fine_tuner(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.cfg.finetune_lr)

    def fine_tune(self, episode: SearchEpisode, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """One REINFORCE step toward the candidates this search found better than its average."""
        seen, observed = episode.evaluated()
        rewards = torch.from_numpy(observed)
        if len(rewards) < 2 or float(rewards.std()) < 1e-12:
            return {}
        adv = ((rewards - rewards.mean()) / rewards.std()).float()
        seen = torch.from_numpy(seen)
        logp = torch.log_softmax(self.scores(episode), 0)[seen]
        loss = -(adv * logp).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        self._version += 1
        return {"losses/finetune": float(loss.detach()), "charts/reward": float(rewards.mean()), "evaluations": len(rewards)}

    # --- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: dict | None = None) -> None:
        """weights (safetensors) + optimizer state (tensors) + agent.json; each written atomically."""
        directory = Path(directory)
        tensors = {f"net.{k}": v.detach().clone().contiguous() for k, v in self.net.state_dict().items()}
        for pid, st in self.opt.state_dict()["state"].items():
            for k, v in st.items():
                tensors[f"opt.{pid}.{k}"] = v.detach().clone().contiguous().reshape(v.shape)
        meta = {"format": AGENT_FORMAT, "config": asdict(self.cfg), "updates": self.updates, **(extra or {})}
        # The metadata rides in the safetensors header too: that one rename commits weights and
        # bookkeeping together (a kill before agent.json is rewritten cannot pair them wrongly).
        atomic_write(directory / "agent.safetensors",
                     lambda p: save_file(tensors, str(p), metadata={META_KEY: json.dumps(meta)}))
        write_json(directory / "agent.json", meta)

    @classmethod
    def load(cls, directory: str | Path) -> tuple[Agent, dict]:
        directory = Path(directory)
        weights = directory / "agent.safetensors"
        fix = "meta-train a new one with rcnas meta-train"
        if not (directory / "agent.json").is_file():
            raise BadInput(f"agent not found: {directory} holds no agent.json; give an agent directory written "
                           f"by rcnas meta-train (or pretrained, or scratch)")
        meta = read_json(directory / "agent.json")  # a BadInput when it is not JSON
        if not isinstance(meta, dict) or meta.get("format") != AGENT_FORMAT:
            raise BadInput(f"{directory} is not an rcnas agent of format {AGENT_FORMAT}; {fix}")
        try:
            with safe_open(str(weights), framework="pt", device="cpu") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
            if META_KEY in header:  # written in the same rename as the weights: it wins over agent.json
                meta = json.loads(header[META_KEY])
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to replace
            raise BadInput(f"cannot read {weights} ({type(e).__name__}); it is missing or corrupt: {fix}") from None
        if not isinstance(meta, dict) or meta.get("format") != AGENT_FORMAT:
            raise BadInput(f"{directory} is not an rcnas agent of format {AGENT_FORMAT}; {fix}")
        agent = cls(from_dict(AgentConfig, meta.get("config"), where=str(directory / "agent.json")))
        try:
            agent.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
            opt_state = agent.opt.state_dict()
            for key, v in tensors.items():
                if key.startswith("opt."):
                    _, pid, name = key.split(".", 2)
                    opt_state["state"].setdefault(int(pid), {})[name] = v
            agent.opt.load_state_dict(opt_state)
            agent.updates = int(meta.get("updates", 0))
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise BadInput(f"{weights} does not match the agent described by its metadata ({type(e).__name__}); "
                           f"restore the directory or {fix}") from None
        return agent, meta


__all__ = ["AGENT_FORMAT", "Agent", "AgentConfig", "Step"]
