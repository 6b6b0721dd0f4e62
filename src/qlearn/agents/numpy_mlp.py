"""The DQN update for plain MLP Q-networks on the CPU, in numpy: forward, backprop and Adam.

At CartPole sizes a torch update is bound by dispatch, not arithmetic: each of its ~40 small ops
costs ~13 us on a laptop-class CPU, against ~4 us for a numpy call. This engine does the same
update with explicit backpropagation through `Linear -> ReLU -> ... -> Linear`, and keeps every
parameter, gradient and Adam moment in one flat array, so that Adam and gradient clipping are a
dozen vectorised calls whatever the depth.

The engine owns its state: the online and target parameters, Adam's moments and step counts
live in its flat numpy arrays. Torch sees them only at the boundary: `state_dict()` and
`load_state_dict()` speak the torch engine's checkpoint tensors, and `network()` copies the
current weights into a torch module when asked. A phase of several gradient steps under a fixed
target network runs the target network, and for plain DQN the whole Bellman target, once over
all of its mini-batches.

The targets are `qlearn.targets`' (the same functions the torch engine calls); the loss, its
gradient, clipping and Adam follow `torch.nn.functional.mse_loss` / `smooth_l1_loss`,
`torch.nn.utils.clip_grad_norm_` and `torch.optim.Adam`, and the tests check the update against
the torch engine.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import numpy as np
import torch

from qlearn import targets
from qlearn.agents.engine import (
    NonfiniteHandler,
    UpdateResult,
    join_state,
    new_priorities,
    raise_on_nonfinite,
    rows_per_step,
    split_state,
)
from qlearn.config import DQNConfig
from qlearn.envs import ObsEncoder
from qlearn.networks import QNetwork, mlp_forward, plain_mlp_blockers
from qlearn.replay import Batch

# Rows of one target-network pass over a phase's mini-batches; bounds its activation memory.
MAX_TARGET_ROWS = 16_384
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which the torch engine uses
ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")  # torch's names, in torch's order


def unsupported(config: DQNConfig, torso: str) -> list[str]:
    """The settings that rule this engine out, as `name = value` strings (empty: it applies)."""
    num_atoms = config.num_atoms if config.distributional != "none" else 1
    reasons = [f"device = {config.device!r}"] if config.device != "cpu" else []
    reasons += plain_mlp_blockers(
        torso, dueling=config.dueling, noisy=config.noisy, num_atoms=num_atoms
    )
    if config.log_grad_norms:
        reasons.append("log_grad_norms = true")
    return reasons


def loss_terms(
    diff: np.ndarray, loss: str, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample loss and its derivative in `diff` = Q(s, a) - target, any shape.

    Huber (delta 1, as torch's smooth_l1_loss): 0.5 diff^2 where |diff| < 1, else |diff| - 0.5,
    derivative clip(diff, -1, 1); MSE: diff^2, derivative 2 diff. Both times the importance
    weights of prioritized replay, where given (`weights` broadcasts against `diff`).
    """
    if loss == "huber":
        abs_diff = np.abs(diff)
        per_sample = np.where(abs_diff < 1.0, 0.5 * diff * diff, abs_diff - 0.5)
        dloss = np.clip(diff, -1.0, 1.0)
    else:
        per_sample = diff * diff
        dloss = 2.0 * diff
    if weights is not None:
        per_sample = per_sample * weights
        dloss = dloss * weights
    return per_sample, dloss


def adam_rows(
    flat: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    scratch: np.ndarray,
    steps: np.ndarray,
    config: DQNConfig,
) -> None:
    """Per row, clip the gradient's norm to `config.max_grad_norm`, then one Adam step in place,
    with torch.optim.Adam's arithmetic; a row is one network's flat parameters.

    The single engine passes one row, the stacked learner one per seed: the same float32
    operations on each row, so a seed's weights equal its single run's bit for bit.

    Args:
        flat, grad, exp_avg, exp_avg_sq, scratch: (rows, num_params) float32.
        steps: (rows,) Adam's step count of each row, this step included.
        config: `learning_rate`, `adam_eps`, `max_grad_norm`.
    """
    c = config
    if c.max_grad_norm is not None:
        for k in range(len(grad)):
            norm = math.sqrt(float(np.dot(grad[k], grad[k])))
            coef = c.max_grad_norm / (norm + 1e-6)
            if coef < 1.0:
                grad[k] *= coef
    lr, (beta1, beta2), eps = c.learning_rate, ADAM_BETAS, c.adam_eps
    m, v, tmp = exp_avg, exp_avg_sq, scratch
    np.subtract(grad, m, out=tmp)
    tmp *= 1.0 - beta1
    m += tmp
    np.multiply(grad, grad, out=tmp)
    tmp *= 1.0 - beta2
    v *= beta2
    v += tmp
    # The factors are rounded to float32 before they scale float32 arrays, as a Python float
    # is (NEP 50). One row (the single engine, every update of a run) takes them as Python
    # floats: numpy's scalar loops, ~30% faster here than a broadcast (1, 1) array, and the
    # same float32 values, so the stacked learner's rows still equal single runs bit for bit.
    # A stacked row that takes no step (t = 0) gets inf here and is restored by its caller.
    inv_bias2_sqrt: float | np.ndarray
    step_size: float | np.ndarray
    if len(flat) == 1:
        t = float(steps[0])
        inv_bias2_sqrt = float(np.float32(1.0 / math.sqrt(1.0 - beta2**t)))
        step_size = float(np.float32(lr / (1.0 - beta1**t)))
    else:
        t_rows = steps.astype(np.float64)
        with np.errstate(divide="ignore"):
            inv_bias2_sqrt = (1.0 / np.sqrt(1.0 - beta2**t_rows)).astype(np.float32)[:, None]
            step_size = (lr / (1.0 - beta1**t_rows)).astype(np.float32)[:, None]
    np.sqrt(v, out=tmp)
    tmp *= inv_bias2_sqrt
    tmp += eps
    np.divide(m, tmp, out=tmp)
    tmp *= step_size
    flat -= tmp


class NumpyMLPEngine:
    """Gradient steps for a plain MLP `QNetwork`, computed in numpy on flat arrays.

    Args:
        q_net: the initialised online network (nn.Linear layers with ReLU between them); its
            weights are copied in, and it (with a copy as the target network) becomes the torch
            view that `network()` refreshes.
        config: the learner's config (loss, double_q, max_grad_norm, prioritized, Adam's
            learning_rate and adam_eps).
        encoder: raw observations -> float32 network inputs.
    """

    def __init__(self, q_net: QNetwork, config: DQNConfig, encoder: ObsEncoder) -> None:
        if not q_net.plain_mlp:
            raise TypeError("NumpyMLPEngine runs plain MLP networks only")
        self.config = config
        self._encoder = encoder
        self._online_net = q_net
        self._target_net = copy.deepcopy(q_net)
        self._target_net.requires_grad_(False)
        params = list(q_net.parameters())
        layer_params = [t for m in q_net.linears for t in (m.weight, m.bias)]
        if len(params) != len(layer_params) or any(
            a is not b for a, b in zip(params, layer_params, strict=True)
        ):
            raise TypeError("a plain MLP's parameters must be its layers' weights and biases")
        self._names = [name for name, _ in q_net.named_parameters()]
        self._shapes = [tuple(p.shape) for p in params]
        self.flat = np.concatenate([p.detach().numpy().reshape(-1) for p in params])
        self.target_flat = self.flat.copy()
        self.grad = np.zeros_like(self.flat)
        self.exp_avg = np.zeros_like(self.flat)
        self.exp_avg_sq = np.zeros_like(self.flat)
        self.steps = np.zeros(len(params), dtype=np.float32)  # Adam's step, per tensor as torch
        self._scratch = np.empty_like(self.flat)
        # The flat arrays are never reallocated, so their per-layer views are made once.
        self._online_views = self._layer_views(self.flat)
        self._target_views = self._layer_views(self.target_flat)
        self._grad_views = self._layer_views(self.grad)
        self._online_stale = self._target_stale = False  # do the torch modules lag the arrays?

    def _tensor_views(self, flat: np.ndarray) -> list[np.ndarray]:
        """Views of `flat`, one per parameter, shaped like it."""
        views, offset = [], 0
        for shape in self._shapes:
            n = math.prod(shape)
            views.append(flat[offset : offset + n].reshape(shape))
            offset += n
        return views

    def _layer_views(self, flat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(weight (out, in), bias (out,)) views of `flat`, one pair per layer."""
        views = self._tensor_views(flat)
        return list(zip(views[::2], views[1::2], strict=True))

    def encode(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self._encoder(obs), dtype=np.float32)

    # ------------------------------------------------------------------ backward and Adam
    def _backward(self, acts: list[np.ndarray], grad_out: np.ndarray) -> None:
        """Write dLoss/dparams into `self.grad`, given dLoss/doutput (rows, num_actions)."""
        g = grad_out
        layers = self._online_views
        for i in range(len(layers) - 1, -1, -1):
            h_in = acts[i]
            dw, db = self._grad_views[i]
            np.dot(g.T, h_in, out=dw)
            np.add.reduce(g, axis=0, out=db)
            if i:
                g = g @ layers[i][0]
                g *= h_in > 0

    def _adam(self) -> None:
        """Clip the global gradient norm, then one Adam step, as torch.optim.Adam does it."""
        self.steps += 1
        adam_rows(
            self.flat[None],
            self.grad[None],
            self.exp_avg[None],
            self.exp_avg_sq[None],
            self._scratch[None],
            self.steps[:1],
            self.config,
        )

    # ------------------------------------------------------------------ the update
    def target_values(self, next_x: np.ndarray) -> np.ndarray:
        """Target-network Q-values of encoded next observations, (rows, num_actions)."""
        target = self._target_views
        if len(next_x) <= MAX_TARGET_ROWS:
            return mlp_forward(target, next_x)[-1]
        parts = [
            mlp_forward(target, next_x[i : i + MAX_TARGET_ROWS])[-1]
            for i in range(0, len(next_x), MAX_TARGET_ROWS)
        ]
        return np.concatenate(parts)

    @np.errstate(over="ignore", invalid="ignore")  # a non-finite loss is reported, not warned
    def update(
        self, batch: Batch, num_steps: int = 1, on_nonfinite: NonfiniteHandler = raise_on_nonfinite
    ) -> UpdateResult:
        """See `UpdateEngine.update`. The target network runs once over the whole batch; without
        Double DQN, so does the Bellman target, as it depends on the target network only."""
        c = self.config
        rows = rows_per_step(batch, num_steps)
        x_all = self.encode(batch.obs)
        next_x_all = self.encode(batch.next_obs)
        next_target = self.target_values(next_x_all)  # (num_steps * rows, num_actions)
        returns, discounts, terminated = batch.returns, batch.discounts, batch.terminated
        td_all = None
        if not c.double_q:
            td_all = targets.td_target(returns, discounts, terminated, next_target)
        priorities = new_priorities(c.prioritized, len(x_all), num_steps)
        applied, last = 0, (math.nan, math.nan)
        for i in range(num_steps):
            part = slice(i * rows, (i + 1) * rows)
            x = x_all[part]
            if td_all is None:
                # One pass over obs and next_obs together; only the obs half is backpropagated.
                both = mlp_forward(self._online_views, np.concatenate([x, next_x_all[part]]))
                acts = [a[:rows] for a in both]
                target = targets.double_q_target(
                    returns[part],
                    discounts[part],
                    terminated[part],
                    both[-1][rows:],
                    next_target[part],
                )
            else:
                acts = mlp_forward(self._online_views, x)
                target = td_all[part]
            weights = batch.weights[part] if c.prioritized else None
            loss, q_mean, td = self._step(acts, batch.actions[part], target, weights)
            if not math.isfinite(loss):
                on_nonfinite(loss, applied)
                continue
            applied += 1
            last = (loss, q_mean)
            if priorities is not None:
                priorities[part] = td
            elif c.prioritized:  # one step: its priorities are the result's
                priorities = td
        if applied:
            self._online_stale = True
        return UpdateResult(applied, *last, priorities)

    def _step(
        self,
        acts: list[np.ndarray],
        actions: np.ndarray,
        target: np.ndarray,
        weights: np.ndarray | None,
    ) -> tuple[float, float, np.ndarray]:
        """One gradient step, given the online network's activations and the (rows,) targets.

        Returns:
            (loss, mean Q of the taken actions, |TD error| per sample); the parameters are left
            untouched when the loss is not finite.
        """
        n = len(target)
        rows = np.arange(n)
        q_taken = acts[-1][rows, actions]
        diff = q_taken - target
        per_sample, dloss = loss_terms(diff, self.config.loss, weights)
        loss = float(np.add.reduce(per_sample)) / n
        if math.isfinite(loss):
            grad_out = np.zeros_like(acts[-1])
            grad_out[rows, actions] = dloss / n
            self._backward(acts, grad_out)
            self._adam()
        return loss, float(np.add.reduce(q_taken)) / n, np.abs(diff)

    def sync_target(self, tau: float) -> None:
        if tau >= 1.0:
            np.copyto(self.target_flat, self.flat)
        else:
            self.target_flat += tau * (self.flat - self.target_flat)
        self._target_stale = True

    def q_values(self, x: np.ndarray) -> np.ndarray:
        return mlp_forward(self._online_views, x)[-1]

    # ------------------------------------------------------------------ torch at the boundary
    def network(self) -> QNetwork:
        if self._online_stale:
            _copy_into(self._online_net, self._tensor_views(self.flat))
            self._online_stale = False
        return self._online_net

    def target_network(self) -> QNetwork:
        if self._target_stale:
            _copy_into(self._target_net, self._tensor_views(self.target_flat))
            self._target_stale = False
        return self._target_net

    def state_dict(self) -> dict[str, torch.Tensor]:
        def named(flat: np.ndarray) -> dict[str, torch.Tensor]:
            views = self._tensor_views(flat)
            return {k: torch.from_numpy(v) for k, v in zip(self._names, views, strict=True)}

        steps = torch.from_numpy(self.steps)
        moments = zip(
            self._tensor_views(self.exp_avg), self._tensor_views(self.exp_avg_sq), strict=True
        )
        optim = {
            i: {"step": steps[i], "exp_avg": torch.from_numpy(m), "exp_avg_sq": torch.from_numpy(v)}
            for i, (m, v) in enumerate(moments)
        }
        return join_state(named(self.flat), named(self.target_flat), optim)

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor]) -> None:
        online, target, optim = split_state(tensors)
        # The torch modules check names and shapes, with torch's messages; then copy in.
        self._online_net.load_state_dict(online)
        self._target_net.load_state_dict(target)
        for net, flat in ((self._online_net, self.flat), (self._target_net, self.target_flat)):
            for view, p in zip(self._tensor_views(flat), net.parameters(), strict=True):
                view[...] = p.detach().cpu().numpy()
        self._online_stale = self._target_stale = False
        self._load_adam(optim)

    def _load_adam(self, optim: Mapping[int, Mapping[str, torch.Tensor]]) -> None:
        """Adam's moments and steps from per-parameter state; none at all means a fresh Adam."""
        unknown = sorted(set(optim) - set(range(len(self._shapes))))
        if unknown:
            raise ValueError(f"optim.{unknown[0]} has no parameter {unknown[0]} to belong to")
        if not optim:
            self.exp_avg[:] = 0.0
            self.exp_avg_sq[:] = 0.0
            self.steps[:] = 0.0
            return
        m_views, v_views = self._tensor_views(self.exp_avg), self._tensor_views(self.exp_avg_sq)
        for i, shape in enumerate(self._shapes):
            state = optim.get(i, {})
            for name in ADAM_STATE:
                if name not in state:
                    raise KeyError(f"optim.{i}.{name}")
            for name, view in (("exp_avg", m_views[i]), ("exp_avg_sq", v_views[i])):
                value = state[name]
                if tuple(value.shape) != shape:
                    raise ValueError(
                        f"optim.{i}.{name} has shape {tuple(value.shape)} where parameter {i} "
                        f"has {shape}"
                    )
                view[...] = value.detach().cpu().numpy()
            self.steps[i] = float(state["step"])


def _copy_into(net: QNetwork, views: list[np.ndarray]) -> None:
    """Write `views` (one per parameter, in order) into `net`'s parameters."""
    with torch.no_grad():
        for p, view in zip(net.parameters(), views, strict=True):
            p.copy_(torch.from_numpy(view))
