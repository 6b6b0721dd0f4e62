"""Pure Bellman targets and distributional losses for the DQN family.

Every function here is pure: tensors in, a tensor out, no module state. Targets do not detach
their inputs; compute them under `torch.no_grad()` (the agent does). The losses treat their target
argument as a constant and detach it themselves, so a gradient only ever reaches the prediction.

Conventions shared by all functions (batch = B):

- `rewards` (B,): the (possibly k-step) discounted return r_t + γ r_{t+1} + ... + γ^{k-1} r_{t+k-1}.
- `discounts` (B,): γ^k for a k-step transition (γ for one step).
- `terminated` (B,): 1.0 where the transition ends in a terminal state (no bootstrap), else 0.0.
  A truncated episode is *not* terminated: it bootstraps from its real final observation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qlearn.errors import TrainingError

__all__ = [
    "c51_loss",
    "c51_project",
    "double_q_target",
    "nstep_return",
    "quantile_huber_loss",
    "quantile_midpoints",
    "td_target",
]


def _check_transition(rewards: Tensor, discounts: Tensor, terminated: Tensor, batch: int) -> None:
    # A (B, 1) tensor broadcast against a (B,) one silently yields (B, B): refuse it loudly.
    for name, x in (("rewards", rewards), ("discounts", discounts), ("terminated", terminated)):
        if tuple(x.shape) != (batch,):
            raise TrainingError(
                f"{name} has shape {tuple(x.shape)}; allowed: ({batch},), one value per sample"
            )


def _check_matrix(name: str, x: Tensor, batch: int | None = None) -> None:
    if x.dim() != 2 or (batch is not None and x.shape[0] != batch):
        want = "(batch, n)" if batch is None else f"({batch}, n)"
        raise TrainingError(f"{name} has shape {tuple(x.shape)}; allowed: {want}")


def _bootstrap_scale(discounts: Tensor, terminated: Tensor, dtype: torch.dtype) -> Tensor:
    """γ^k (1 − terminated), the factor in front of the bootstrapped value."""
    return discounts.to(dtype) * (1.0 - terminated.to(dtype))  # (batch,)


def td_target(rewards: Tensor, discounts: Tensor, terminated: Tensor, next_q: Tensor) -> Tensor:
    """Q-learning target with a max over the target network's next-state values.

        y = r + γ^k (1 − terminated) max_a' Q_target(s', a')

    Args:
        rewards: (batch,) k-step discounted rewards.
        discounts: (batch,) γ^k per sample.
        terminated: (batch,) 0/1 (float or bool).
        next_q: (batch, num_actions) target-network values of the next observation.

    Returns:
        (batch,) targets, in `next_q`'s dtype.
    """
    _check_matrix("next_q", next_q)
    _check_transition(rewards, discounts, terminated, next_q.shape[0])
    next_v = next_q.max(dim=1).values  # (batch,)
    return rewards.to(next_q.dtype) + _bootstrap_scale(discounts, terminated, next_q.dtype) * next_v


def double_q_target(
    rewards: Tensor,
    discounts: Tensor,
    terminated: Tensor,
    next_q_online: Tensor,
    next_q_target: Tensor,
) -> Tensor:
    """Double DQN target (van Hasselt et al., 2016): the online net picks, the target net scores.

        a* = argmax_a' Q_online(s', a')
        y  = r + γ^k (1 − terminated) Q_target(s', a*)

    Args:
        rewards: (batch,) k-step discounted rewards.
        discounts: (batch,) γ^k per sample.
        terminated: (batch,) 0/1 (float or bool).
        next_q_online: (batch, num_actions) online-network values of the next observation.
        next_q_target: (batch, num_actions) target-network values of the next observation.

    Returns:
        (batch,) targets, in `next_q_target`'s dtype.
    """
    _check_matrix("next_q_target", next_q_target)
    if next_q_online.shape != next_q_target.shape:
        raise TrainingError(
            f"next_q_online has shape {tuple(next_q_online.shape)}; allowed: the shape of "
            f"next_q_target, {tuple(next_q_target.shape)}"
        )
    _check_transition(rewards, discounts, terminated, next_q_target.shape[0])
    best = next_q_online.argmax(dim=1, keepdim=True)  # (batch, 1)
    next_v = next_q_target.gather(1, best).squeeze(1)  # (batch,)
    scale = _bootstrap_scale(discounts, terminated, next_q_target.dtype)
    return rewards.to(next_q_target.dtype) + scale * next_v


def c51_project(
    next_probs: Tensor,
    rewards: Tensor,
    discounts: Tensor,
    terminated: Tensor,
    support: Tensor,
) -> Tensor:
    """Project the shifted target distribution back onto the C51 support (Bellemare et al., 2017).

    Each atom z_j of the next distribution moves to Tz_j = r + γ^k (1 − terminated) z_j, clamped to
    [v_min, v_max]. Its mass p_j is split between the two neighbouring atoms of the support in
    proportion to closeness: with b = (Tz_j − v_min) / Δz, l = ⌊b⌋ and u = l + 1,

        m_l += p_j (u − b),    m_u += p_j (b − l).

    l is capped at num_atoms − 2, so an atom landing exactly on a support point (including v_max)
    puts all its mass there and none is lost (the l == u case of the paper's Algorithm 1). A
    terminal transition collapses every atom onto r.

    Args:
        next_probs: (batch, num_atoms) target-network probabilities of the chosen next action.
        rewards: (batch,) k-step discounted rewards.
        discounts: (batch,) γ^k per sample.
        terminated: (batch,) 0/1 (float or bool).
        support: (num_atoms,) atoms evenly spaced from v_min to v_max.

    Returns:
        (batch, num_atoms) projected probabilities; each row sums to the row sum of `next_probs`.
    """
    _check_matrix("next_probs", next_probs)
    batch, num_atoms = next_probs.shape
    if support.dim() != 1 or support.shape[0] != num_atoms or num_atoms < 2:
        raise TrainingError(
            f"support has shape {tuple(support.shape)}; allowed: ({num_atoms},) matching "
            "next_probs, with at least 2 atoms"
        )
    _check_transition(rewards, discounts, terminated, batch)
    dtype = next_probs.dtype
    support = support.to(dtype)
    v_min, v_max = support[0], support[-1]
    delta = (v_max - v_min) / (num_atoms - 1)

    scale = _bootstrap_scale(discounts, terminated, dtype)  # (batch,)
    tz = rewards.to(dtype)[:, None] + scale[:, None] * support[None, :]  # (batch, num_atoms)
    tz = tz.clamp(v_min, v_max)
    # Rounding in the division can land a hair outside [0, num_atoms - 1]; clamp it back.
    b = ((tz - v_min) / delta).clamp(0, num_atoms - 1)  # (batch, num_atoms)
    lower = b.floor().clamp(max=num_atoms - 2)  # (batch, num_atoms)
    upper_weight = b - lower  # (batch, num_atoms), in [0, 1]
    lower_idx = lower.long()

    projected = torch.zeros_like(next_probs)  # (batch, num_atoms)
    projected.scatter_add_(1, lower_idx, next_probs * (1.0 - upper_weight))
    projected.scatter_add_(1, lower_idx + 1, next_probs * upper_weight)
    return projected


def c51_loss(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Per-sample cross-entropy between a projected target and the predicted distribution.

        loss_i = − Σ_j m_ij log softmax(logits_i)_j

    Args:
        logits: (batch, num_atoms) online-network logits of the taken action.
        target_probs: (batch, num_atoms) projected target (from `c51_project`); detached here.

    Returns:
        (batch,) losses; also the PER priority signal.
    """
    _check_matrix("logits", logits)
    if target_probs.shape != logits.shape:
        raise TrainingError(
            f"target_probs has shape {tuple(target_probs.shape)}; allowed: the shape of logits, "
            f"{tuple(logits.shape)}"
        )
    log_p = F.log_softmax(logits, dim=1)  # (batch, num_atoms)
    return -(target_probs.detach() * log_p).sum(dim=1)


def quantile_midpoints(
    num_quantiles: int, *, dtype: torch.dtype | None = None, device: torch.device | None = None
) -> Tensor:
    """QR-DQN quantile fractions τ̂_i = (i + 0.5) / N for i = 0..N−1, shape (N,)."""
    if num_quantiles < 1:
        raise TrainingError(f"num_quantiles = {num_quantiles!r} is invalid; allowed: >= 1")
    return (torch.arange(num_quantiles, dtype=dtype, device=device) + 0.5) / num_quantiles


def quantile_huber_loss(pred: Tensor, target: Tensor, kappa: float = 1.0) -> Tensor:
    """Per-sample quantile Huber loss of QR-DQN (Dabney et al., 2018).

    With u_ij = target_j − pred_i and τ̂_i = (i + 0.5) / N,

        ρ_κ(u_ij) = |τ̂_i − 1{u_ij < 0}| · L_κ(u_ij) / κ
        loss      = Σ_i (1/N') Σ_j ρ_κ(u_ij)

    where L_κ is the Huber loss (½u² for |u| ≤ κ, κ(|u| − ½κ) beyond). κ = 0 gives the plain
    quantile loss |τ̂_i − 1{u < 0}| · |u|.

    Args:
        pred: (batch, N) predicted quantiles of the taken action, at fractions τ̂_i.
        target: (batch, N') r + γ^k (1 − terminated) × target quantiles of the greedy next action;
            detached here.
        kappa: Huber threshold, >= 0.

    Returns:
        (batch,) losses.
    """
    _check_matrix("pred", pred)
    _check_matrix("target", target, pred.shape[0])
    if not kappa >= 0:
        raise TrainingError(f"kappa = {kappa!r} is invalid; allowed: >= 0")
    taus = quantile_midpoints(pred.shape[1], dtype=pred.dtype, device=pred.device)  # (N,)
    u = target.detach()[:, None, :] - pred[:, :, None]  # (batch, N, N')
    abs_u = u.abs()
    if kappa > 0:
        huber = torch.where(abs_u <= kappa, 0.5 * u.square(), kappa * (abs_u - 0.5 * kappa))
        huber = huber / kappa
    else:
        huber = abs_u
    weight = (taus[None, :, None] - (u.detach() < 0).to(pred.dtype)).abs()  # (batch, N, N')
    return (weight * huber).mean(dim=2).sum(dim=1)


def nstep_return(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted sum along the last axis: Σ_{i<k} γ^i r_i (numpy, for tests and tools).

    Args:
        rewards: (..., k) rewards in time order.
        gamma: discount factor.

    Returns:
        (...) float64 returns.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    powers = gamma ** np.arange(rewards.shape[-1], dtype=np.float64)  # (k,)
    return np.asarray(rewards @ powers)
