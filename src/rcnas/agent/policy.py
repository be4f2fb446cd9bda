"""The agent's network (from the paper's figures): a per-stage encoding layer, a bidirectional
LSTM across the 3 stages, then per stage [global features (LIPS, cost, progress, task), forward
state, backward state] through a stage-specific MLP into that stage's action heads. All heads act
at every step; choices are sampled head by head under the environment's masks."""
from __future__ import annotations

import torch
from torch import nn

from rcnas.env.compression import GLOBAL_FEATURES, STAGE_FEATURES
from rcnas.search.space import HEAD_SIZES


class PolicyNet(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.encode = nn.ModuleList(nn.Linear(STAGE_FEATURES, hidden) for _ in range(3))
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.stage_mlp = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * hidden + GLOBAL_FEATURES, hidden), nn.Tanh()) for _ in range(3))
        self.heads = nn.ModuleList(nn.Linear(hidden, sum(HEAD_SIZES)) for _ in range(3))
        for head in self.heads:
            nn.init.normal_(head.weight, std=0.01)
            # [choice] start near the teacher: prefer small moves (a uniform policy shrinks every stage
            # by ~4 of 8 width levels per episode and lands far below the budget; with this prior the
            # masks, which forbid what can no longer meet the budget, bring the network down to near
            # it) and the basic block (the teachers' block: a robust stage cannot inherit weights).
            with torch.no_grad():
                head.bias.copy_(torch.cat([torch.linspace(1.0, -1.0, n) if n > 2 else torch.tensor([1.0, 0.0])
                                           for n in HEAD_SIZES]))

    def forward(self, obs: torch.Tensor) -> list[torch.Tensor]:
        """obs (B, OBS_DIM) -> 9 logit tensors (B, n_choices), in head order d1 w1 b1 d2 ... b3."""
        stages = obs[:, : 3 * STAGE_FEATURES].view(-1, 3, STAGE_FEATURES)      # (B, 3, 4)
        glob = obs[:, 3 * STAGE_FEATURES:]                                       # (B, G)
        enc = torch.stack([torch.tanh(f(stages[:, i])) for i, f in enumerate(self.encode)], 1)  # (B, 3, H)
        seq, _ = self.lstm(enc)                                                  # (B, 3, 2H): fwd | bwd
        logits = []
        for i in range(3):
            h = self.stage_mlp[i](torch.cat([seq[:, i], glob], dim=1))           # (B, H)
            logits += list(torch.split(self.heads[i](h), list(HEAD_SIZES), dim=1))
        return logits


def masked_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
