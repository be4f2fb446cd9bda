"""The agent's network, in the paper's shape: a per-stage encoding layer, a bidirectional LSTM across
the 3 stages, then per stage [forward state, backward state, LIPS, cost and task features] through a
stage-specific MLP into that stage's head. Each head scores its stage's choice (depth, width and block
relative to the teacher) in the context of the whole network; a candidate's score is the sum of its
3 heads. All heads act on every candidate; the policy is a softmax over the scores of the candidates
left (`rcnas.agent.agent`), so one network serves every teacher and grid.
"""
from __future__ import annotations

import torch
from torch import nn

from rcnas.env.features import GLOBAL_FEATURES, STAGE_FEATURES


class ScoreNet(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.encode = nn.ModuleList(nn.Linear(STAGE_FEATURES, hidden) for _ in range(3))
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.stage_mlp = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * hidden + GLOBAL_FEATURES, hidden), nn.Tanh()) for _ in range(3))
        self.heads = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(3))
        for head in self.heads:  # an untrained agent ranks nothing: it starts as uniform random search
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        # how far the policy follows what it has seen in this search: trust(n) = softplus(a + b log(1+n))
        self.trust = nn.Parameter(torch.tensor([0.0, 0.5]))

    def forward(self, stages: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
        """stages (N, 3, STAGE_FEATURES), glob (N, GLOBAL_FEATURES) -> scores (N,)."""
        enc = torch.stack([torch.tanh(f(stages[:, i])) for i, f in enumerate(self.encode)], 1)  # (N, 3, H)
        seq, _ = self.lstm(enc)                                                                # (N, 3, 2H)
        return sum(self.heads[i](self.stage_mlp[i](torch.cat([seq[:, i], glob], 1))).squeeze(1) for i in range(3))

    def trust_at(self, n: int) -> torch.Tensor:
        """The weight of the within-search evidence after `n` evaluations (0 before the first)."""
        if n == 0:
            return torch.zeros(())
        return nn.functional.softplus(self.trust[0] + self.trust[1] * torch.log1p(torch.tensor(float(n))))


class Ensemble(nn.Module):
    """[choice] Several independently meta-trained score networks acting as one. Each member's scores
    are standardised over the candidates, averaged, and rescaled to the members' mean spread.

    One meta-training draw is a gamble on a dataset it never saw: on the digits -> MNIST-5k split's
    mirror (MNIST-5k tables -> digits tables) the draws of one configuration differ in held-out regret
    as much as two designs do, and some collapse to an over-sharp prior. The average of standardised
    scores keeps what the draws agree on, and no over-sharp member outvotes the others (the raw mean
    would follow the sharpest)."""

    def __init__(self, members: list[ScoreNet]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, stages: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
        scores = torch.stack([m(stages, glob) for m in self.members])                # (K, N)
        spread = scores.std(1, correction=0, keepdim=True).clamp(min=1e-6)
        return ((scores - scores.mean(1, keepdim=True)) / spread).mean(0) * spread.mean()

    def trust_at(self, n: int) -> torch.Tensor:
        return torch.stack([m.trust_at(n) for m in self.members]).mean()
