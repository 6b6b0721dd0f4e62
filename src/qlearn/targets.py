"""Pure Bellman targets and distributional losses for the DQN family.

Every function here is pure: arrays in, an array out, no module state. The Bellman targets
(`bootstrap_target`, `td_target`, `double_q_target`) are plain arithmetic and take numpy arrays
or torch tensors alike, so both update engines compute their targets with the very same code;
`max_value` and `greedy_value` pick the next-state value for either backend. The distributional
pieces (`c51_project`, `c51_loss`, `quantile_huber_loss`) are torch only.

Targets do not detach their inputs; compute them under `torch.no_grad()` (the torch engine
does). The losses treat their target argument as a constant and detach it themselves, so a
gradient only ever reaches the prediction.

Conventions shared by all functions (batch = B):

- `returns` (B,): the (possibly k-step) discounted return r_t + γ r_{t+1} + ... + γ^{k-1} r_{t+k-1}.
- `discounts` (B,): γ^k for a k-step transition (γ for one step).
- `terminated` (B,): 1.0 where the transition ends in a terminal state (no bootstrap), else 0.0.
  A truncated episode is *not* terminated: it bootstraps from its real final observation.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qlearn.errors import TrainingError

__all__ = [
    "bootstrap_target",
    "c51_loss",
    "c51_project",
    "double_q_target",
    "greedy_value",
    "max_value",
    "nstep_return",
    "quantile_huber_loss",
    "quantile_midpoints",
    "td_target",
]

Array = TypeVar("Array", np.ndarray, Tensor)
"""A numpy array or a torch tensor; a function's arguments are all of one kind."""


def _check_transition(returns: Array, discounts: Array, terminated: Array, batch: int) -> None:
    # A (B, 1) array broadcast against a (B,) one silently yields (B, B): refuse it loudly.
    for name, x in (("returns", returns), ("discounts", discounts), ("terminated", terminated)):
        if x.shape != (batch,):  # a torch.Size is a tuple
            raise TrainingError(
                f"{name} has shape {tuple(x.shape)}; allowed: ({batch},), one value per sample"
            )


def _check_matrix(name: str, x: Array, batch: int | None = None) -> None:
    if x.ndim != 2 or (batch is not None and x.shape[0] != batch):
        want = "(batch, n)" if batch is None else f"({batch}, n)"
        raise TrainingError(f"{name} has shape {tuple(x.shape)}; allowed: {want}")


def _cast(x: Array, like: Array) -> Array:
    """`x` in `like`'s dtype (a no-op when it already is); both of one backend."""
    if x.dtype == like.dtype:  # never true across backends: np.float32 != torch.float32
        return x
    if isinstance(like, Tensor):
        if not isinstance(x, Tensor):
            raise TrainingError(
                f"got a {type(x).__name__} beside torch tensors; allowed: all torch tensors or "
                "all numpy arrays"
            )
        return x.to(like.dtype)
    if isinstance(x, Tensor):
        raise TrainingError(
            "got a torch tensor beside numpy arrays; allowed: all torch tensors or all numpy arrays"
        )
    return x.astype(like.dtype, copy=False)


def bootstrap_target(
    returns: Array, discounts: Array, terminated: Array, next_value: Array
) -> Array:
    """The Bellman target from the value of the next state, for numpy arrays or torch tensors.

        y = r + γ^k (1 − terminated) v(s')

    `v(s')` is whatever the variant bootstraps from: max_a' Q_target(s', a') (`max_value`), the
    target network's value of the online network's choice (`greedy_value`, Double DQN), or a
    whole return distribution: QR-DQN's quantiles, where each column is shifted alike, and C51's
    support, whose shifted atoms `c51_project` spreads back onto the support.

    Args:
        returns: (batch,) k-step discounted returns.
        discounts: (batch,) γ^k per sample.
        terminated: (batch,) 0/1 (float or bool).
        next_value: (batch,) next-state values, or (batch, n) one per quantile or atom.

    Returns:
        `next_value`'s shape and dtype, of its backend.
    """
    if next_value.ndim not in (1, 2):
        raise TrainingError(
            f"next_value has shape {tuple(next_value.shape)}; allowed: (batch,) or (batch, n)"
        )
    _check_transition(returns, discounts, terminated, next_value.shape[0])
    returns = _cast(returns, next_value)
    scale = _cast(discounts, next_value) * (1.0 - _cast(terminated, next_value))  # (batch,)
    if next_value.ndim == 2:
        return returns[:, None] + scale[:, None] * next_value
    return returns + scale * next_value


def max_value(next_q: Array) -> Array:
    """max_a' Q(s', a') of (batch, num_actions) values, as (batch,), for either backend."""
    _check_matrix("next_q", next_q)
    if isinstance(next_q, Tensor):
        return next_q.max(dim=1).values
    return next_q.max(axis=1)


def greedy_value(chooser: Array, values: Array) -> Array:
    """`values` at the action `chooser` ranks highest: values[b, argmax_a chooser[b, a]].

    Double DQN scores the online network's choice with the target network; a distributional head
    takes the whole distribution of the action whose mean is greatest. Ties go to the first
    action, in numpy and torch alike.

    Args:
        chooser: (batch, num_actions) values that choose the action.
        values: (batch, num_actions) or (batch, num_actions, n) values to read at the choice.

    Returns:
        (batch,) or (batch, n).
    """
    _check_matrix("chooser", chooser)
    if tuple(values.shape[:2]) != tuple(chooser.shape):
        raise TrainingError(
            f"values has shape {tuple(values.shape)}; allowed: {tuple(chooser.shape)} or "
            f"{tuple(chooser.shape)} + (n,), the shape of chooser"
        )
    if isinstance(chooser, Tensor):
        best = chooser.argmax(dim=1, keepdim=True)  # (batch, 1)
        if values.ndim == 3:
            best = best[:, :, None].expand(-1, -1, values.shape[2])  # (batch, 1, n)
        return values.gather(1, best).squeeze(1)
    return values[np.arange(len(chooser)), chooser.argmax(axis=1)]


def td_target(returns: Array, discounts: Array, terminated: Array, next_q: Array) -> Array:
    """Q-learning target with a max over the target network's next-state values.

        y = r + γ^k (1 − terminated) max_a' Q_target(s', a')

    Args:
        returns: (batch,) k-step discounted returns.
        discounts: (batch,) γ^k per sample.
        terminated: (batch,) 0/1 (float or bool).
        next_q: (batch, num_actions) target-network values of the next observation.

    Returns:
        (batch,) targets, in `next_q`'s dtype and backend.
    """
    return bootstrap_target(returns, discounts, terminated, max_value(next_q))


def double_q_target(
    returns: Array,
    discounts: Array,
    terminated: Array,
    next_q_online: Array,
    next_q_target: Array,
) -> Array:
    """Double DQN target (van Hasselt et al., 2016): the online net picks, the target net scores.

        a* = argmax_a' Q_online(s', a')
        y  = r + γ^k (1 − terminated) Q_target(s', a*)

    Args:
        returns: (batch,) k-step discounted returns.
        discounts: (batch,) γ^k per sample.
        terminated: (batch,) 0/1 (float or bool).
        next_q_online: (batch, num_actions) online-network values of the next observation.
        next_q_target: (batch, num_actions) target-network values of the next observation.

    Returns:
        (batch,) targets, in `next_q_target`'s dtype and backend.
    """
    _check_matrix("next_q_target", next_q_target)
    if next_q_online.shape != next_q_target.shape:
        raise TrainingError(
            f"next_q_online has shape {tuple(next_q_online.shape)}; allowed: the shape of "
            f"next_q_target, {tuple(next_q_target.shape)}"
        )
    next_value = greedy_value(next_q_online, next_q_target)
    return bootstrap_target(returns, discounts, terminated, next_value)


def c51_project(
    next_probs: Tensor,
    returns: Tensor,
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
        returns: (batch,) k-step discounted returns.
        discounts: (batch,) γ^k per sample.
        terminated: (batch,) 0/1 (float or bool).
        support: (num_atoms,) atoms evenly spaced from v_min to v_max.

    Returns:
        (batch, num_atoms) projected probabilities; each row sums to the row sum of `next_probs`.
    """
    _check_matrix("next_probs", next_probs)
    batch, num_atoms = next_probs.shape
    if support.ndim != 1 or support.shape[0] != num_atoms or num_atoms < 2:
        raise TrainingError(
            f"support has shape {tuple(support.shape)}; allowed: ({num_atoms},) matching "
            "next_probs, with at least 2 atoms"
        )
    dtype = next_probs.dtype
    support = support.to(dtype)
    v_min, v_max = support[0], support[-1]
    delta = (v_max - v_min) / (num_atoms - 1)

    atoms = support.expand(batch, num_atoms)  # (batch, num_atoms)
    tz = bootstrap_target(returns, discounts, terminated, atoms).clamp(v_min, v_max)
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
