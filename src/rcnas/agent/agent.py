"""The RC-NAS agent: sampling compression episodes under masks, and the policy-gradient update.

REINFORCE with a moving-average baseline per task setting (as N2N) and an entropy bonus is the
default; PPO (clipped ratio, a few epochs over the batch) is the option to compare.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rcnas.config import from_dict
from rcnas.env.compression import observation
from rcnas.errors import BadInput
from rcnas.io import atomic_write, read_json, write_json
from rcnas.agent.policy import PolicyNet, masked_logits
from rcnas.search.driver import SearchContext
from rcnas.space.arch import Arch

AGENT_FORMAT = 1
META_KEY = "rcnas.agent"  # the agent.json metadata, also in the safetensors header


@dataclass(frozen=True)
class AgentConfig:
    hidden: int = 64                 # width of the encoder, LSTM and stage MLPs
    lr: float = 3e-3                 # Adam learning rate
    entropy: float = 0.01            # entropy bonus weight
    baseline_decay: float = 0.8      # moving-average baseline per task setting
    episodes_per_update: int = 4     # episodes (= candidate evaluations) per policy update
    steps: int = 3                   # compression steps per episode
    algo: str = "reinforce"          # reinforce | ppo
    ppo_epochs: int = 4
    ppo_clip: float = 0.2

    def __post_init__(self) -> None:
        if self.algo not in ("reinforce", "ppo"):
            raise BadInput(f"unknown agent algorithm {self.algo!r}; use reinforce or ppo")
        if self.episodes_per_update < 1 or self.steps < 1:
            raise BadInput("episodes_per_update and steps must be >= 1")
        if self.hidden < 1 or self.ppo_epochs < 1:
            raise BadInput(f"agent hidden and ppo_epochs must be >= 1, got {self.hidden} and {self.ppo_epochs}")
        for name, ok in (("lr", 0 < self.lr < math.inf), ("entropy", 0 <= self.entropy < math.inf),
                         ("baseline_decay", 0 <= self.baseline_decay <= 1),
                         ("ppo_clip", 0 < self.ppo_clip < math.inf)):
            if not ok:
                raise BadInput(f"agent {name} out of range, got {getattr(self, name)}; lr and ppo_clip must be "
                               "> 0, entropy >= 0, baseline_decay in [0, 1]")


@dataclass
class Episode:
    arch: Arch
    obs: list[np.ndarray] = field(default_factory=list)          # one per step, (OBS_DIM,)
    actions: list[tuple[int, ...]] = field(default_factory=list)  # one per step, 9 choices
    masks: list[list[np.ndarray]] = field(default_factory=list)   # per step, per head
    old_logp: float = 0.0


class Agent:
    def __init__(self, cfg: AgentConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or AgentConfig()
        torch.manual_seed(seed)
        self.net = PolicyNet(self.cfg.hidden)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr)
        self.baselines: dict[str, float] = {}
        self.updates = 0

    # --- acting --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_episode(self, ctx: SearchContext, generator: torch.Generator, greedy: bool = False) -> Episode:
        space, steps, budget = ctx.space, self.cfg.steps, ctx.task.budget_macs
        state = space.initial()
        ep = Episode(arch=space.arch(state))
        for t in range(steps):
            obs = observation(ctx, state, t, steps)
            logits = self.net(torch.from_numpy(obs)[None])
            action: tuple[int, ...] = ()
            masks = []
            for head, lg in enumerate(logits):
                mask = np.array(space.mask(state, action, steps - t - 1, budget))
                if not mask.any():
                    raise AssertionError(f"no feasible choice at head {head}: the masks are inconsistent")
                masks.append(mask)
                probs = torch.softmax(masked_logits(lg[0], torch.from_numpy(mask)), 0)
                choice = int(probs.argmax()) if greedy else int(torch.multinomial(probs, 1, generator=generator))
                action += (choice,)
            ep.obs.append(obs)
            ep.actions.append(action)
            ep.masks.append(masks)
            state = space.apply(state, action)
        ep.arch = space.arch(state)
        ep.old_logp = float(self.log_prob([ep])[0][0])
        return ep

    def log_prob(self, episodes: list[Episode]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over steps and heads of log pi(a|s) under the masks, and of the entropy; (E,) each."""
        obs = torch.from_numpy(np.stack([o for ep in episodes for o in ep.obs]))          # (E*T, OBS)
        logits = self.net(obs)
        logp = torch.zeros(len(obs))
        ent = torch.zeros(len(obs))
        rows = [(ep, t) for ep in episodes for t in range(len(ep.obs))]
        for head, lg in enumerate(logits):
            mask = torch.from_numpy(np.stack([ep.masks[t][head] for ep, t in rows]))     # (E*T, n)
            dist = torch.distributions.Categorical(logits=masked_logits(lg, mask))
            act = torch.tensor([ep.actions[t][head] for ep, t in rows])
            logp = logp + dist.log_prob(act)
            ent = ent + dist.entropy()
        steps = len(episodes[0].obs)
        return logp.view(len(episodes), steps).sum(1), ent.view(len(episodes), steps).sum(1)

    # --- learning ------------------------------------------------------------------------------
    def update(self, episodes: list[Episode], rewards: list[float], task_key: str) -> dict[str, float]:
        r = torch.tensor(rewards, dtype=torch.float32)
        base = self.baselines.get(task_key, float(r.mean()))
        adv = r - base
        if self.cfg.algo == "reinforce":
            logp, ent = self.log_prob(episodes)
            loss = -(adv * logp).mean() - self.cfg.entropy * ent.mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        else:  # PPO: clipped surrogate over a few epochs of the same batch
            old = torch.tensor([ep.old_logp for ep in episodes])
            for _ in range(self.cfg.ppo_epochs):
                logp, ent = self.log_prob(episodes)
                ratio = torch.exp(logp - old)
                clipped = torch.clamp(ratio, 1 - self.cfg.ppo_clip, 1 + self.cfg.ppo_clip)
                loss = -torch.min(ratio * adv, clipped * adv).mean() - self.cfg.entropy * ent.mean()
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
        d = self.cfg.baseline_decay
        self.baselines[task_key] = d * base + (1 - d) * float(r.mean())
        self.updates += 1
        return {"losses/policy": float(loss.detach()), "charts/reward": float(r.mean()),
                "charts/baseline": base, "charts/entropy": float(ent.detach().mean())}

    # --- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: dict | None = None) -> None:
        """weights (safetensors) + optimizer state (tensors) + agent.json; each written atomically."""
        directory = Path(directory)
        tensors = {f"net.{k}": v.detach().clone().contiguous() for k, v in self.net.state_dict().items()}
        opt_state = self.opt.state_dict()
        for pid, st in opt_state["state"].items():
            for k, v in st.items():
                tensors[f"opt.{pid}.{k}"] = v.detach().clone().contiguous().reshape(v.shape)
        meta = {"format": AGENT_FORMAT, "config": asdict(self.cfg), "baselines": self.baselines,
                "updates": self.updates, **(extra or {})}
        # The metadata rides in the safetensors header too: that one rename commits weights and
        # bookkeeping together (a kill before agent.json is rewritten cannot pair them wrongly).
        atomic_write(directory / "agent.safetensors",
                     lambda p: save_file(tensors, str(p), metadata={META_KEY: json.dumps(meta)}))
        write_json(directory / "agent.json", meta)

    @classmethod
    def load(cls, directory: str | Path) -> tuple[Agent, dict]:
        directory = Path(directory)
        meta = read_json(directory / "agent.json")
        if not isinstance(meta, dict) or meta.get("format") != AGENT_FORMAT:
            raise BadInput(f"{directory}/agent.json is not an rcnas agent of format {AGENT_FORMAT}; "
                           "meta-train a new one with rcnas meta-train")
        weights = directory / "agent.safetensors"
        try:
            with safe_open(str(weights), framework="pt", device="cpu") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
            if META_KEY in header:  # written in the same rename as the weights: it wins
                meta = json.loads(header[META_KEY])
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to replace
            raise BadInput(f"cannot read {weights} ({type(e).__name__}); "
                           "it is missing or corrupt: meta-train again or restore it") from None
        if not isinstance(meta, dict) or meta.get("format") != AGENT_FORMAT:
            raise BadInput(f"{weights} is not an rcnas agent of format {AGENT_FORMAT}; "
                           "meta-train a new one with rcnas meta-train")
        agent = cls(from_dict(AgentConfig, meta.get("config"), where=str(directory / "agent.json")))
        try:
            agent.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
            opt_state = agent.opt.state_dict()
            for key, v in tensors.items():
                if key.startswith("opt."):
                    _, pid, name = key.split(".", 2)
                    opt_state["state"].setdefault(int(pid), {})[name] = v
            agent.opt.load_state_dict(opt_state)
        except (RuntimeError, ValueError, KeyError) as e:
            raise BadInput(f"{weights} does not match the agent described by {directory / 'agent.json'} "
                           f"({type(e).__name__}); restore the directory or meta-train again") from None
        try:
            agent.baselines = {str(k): float(v) for k, v in meta.get("baselines", {}).items()}
            agent.updates = int(meta.get("updates", 0))
        except (AttributeError, TypeError, ValueError):
            raise BadInput(f"{directory / 'agent.json'} has malformed baselines or updates; "
                           "restore the directory or meta-train again") from None
        return agent, meta


__all__ = ["Agent", "AgentConfig", "Episode"]
