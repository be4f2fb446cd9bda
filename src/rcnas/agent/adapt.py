"""Adaptation within a search: what the results seen so far say about the candidates left.

[choice] The agent's own scores are its prior belief. After each evaluation the observed rewards
(standardised within the search) are regressed on the standardised scores (a slope shrunk toward
`prior_trust`: with few points the prior is believed as it is), and a Gaussian process on the
candidates' relative shapes models the residuals: where the prior was wrong, and how sure that is.
Its kernel is mostly linear (`linear` of the variance: "deeper stage 2 pays on this task" carries
over to every candidate with a deeper stage 2 — the tables' accuracies are largely additive in the
per-stage depth and width) plus an RBF part for what is not. The upper confidence bound,
standardised over the candidates left, is the evidence the policy adds to its scores (weighted by a
learnt trust that grows with the evaluations seen).
"""
from __future__ import annotations

import numpy as np


def rbf(a: np.ndarray, b: np.ndarray, lengthscale: float) -> np.ndarray:
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-0.5 * d2 / lengthscale ** 2)


def covariance(a: np.ndarray, b: np.ndarray, center: np.ndarray, scale: float, lengthscale: float,
               linear: float) -> np.ndarray:
    """linear * (centred dot product, unit mean variance over the candidates) + (1 - linear) * RBF."""
    lin = (a - center) @ (b - center).T / scale
    return linear * lin + (1.0 - linear) * rbf(a, b, lengthscale)


def acquisition(prior: np.ndarray, kernel: np.ndarray, seen: np.ndarray, rewards: np.ndarray,
                available: np.ndarray, *, lengthscale: float = 0.4, noise: float = 0.1, kappa: float = 0.5,
                prior_trust: float = 0.5, linear: float = 0.7, shrink: float = 2.0) -> np.ndarray:
    """Standardised UCB (N,) of every candidate, given the prior scores (N,), the kernel features
    (N, D), the indices of the evaluated candidates `seen` (n,) with their `rewards` (n,), and the
    candidates still `available` (N,) over which the result is standardised (0 elsewhere)."""
    s = (prior - prior[available].mean()) / (prior[available].std() + 1e-9)
    so = s[seen]
    y = rewards - rewards.mean()
    sd = rewards.std()
    y = y / sd if len(rewards) > 1 and sd > 1e-9 else np.zeros_like(y)
    oc = so - so.mean()
    slope = (oc @ y + shrink * prior_trust) / (oc @ oc + shrink)
    offset = y.mean() - slope * so.mean()
    resid = y - (slope * so + offset)
    center = kernel.mean(0)
    scale = float(((kernel - center) ** 2).sum(1).mean()) + 1e-12
    k_oo = covariance(kernel[seen], kernel[seen], center, scale, lengthscale, linear) + noise * np.eye(len(seen))
    k_po = covariance(kernel, kernel[seen], center, scale, lengthscale, linear)
    prior_var = linear * ((kernel - center) ** 2).sum(1) / scale + (1.0 - linear)
    weights = np.linalg.solve(k_oo, resid)
    mean = slope * s + offset + k_po @ weights
    var = prior_var - np.einsum("ij,ji->i", k_po, np.linalg.solve(k_oo, k_po.T))
    ucb = mean + kappa * np.sqrt(np.clip(var, 0.0, None))
    out = np.zeros_like(ucb)
    a = ucb[available]
    out[available] = (a - a.mean()) / (a.std() + 1e-9)
    return out


__all__ = ["acquisition", "covariance", "rbf"]
