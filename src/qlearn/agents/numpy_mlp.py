"""The DQN update for plain MLP Q-networks on the CPU, in numpy: forward, backprop and Adam.

At CartPole sizes a torch update is bound by dispatch, not arithmetic: each of its ~40 small ops
costs ~13 us on a laptop-class CPU, against ~4 us for a numpy call. This engine does the same
update with explicit backpropagation through `Linear -> ReLU -> ... -> Linear`, and keeps every
parameter, gradient and Adam moment in one flat array, so that Adam and gradient clipping are a
dozen vectorised calls whatever the depth.

It owns no state of its own. The torch parameters of both networks are rebound as views of its
flat arrays, and the torch Adam's `exp_avg`, `exp_avg_sq` and `step` as views of its moments: the
torch modules, `state_dict()`, checkpoints and the torch engine all see what it writes. A phase of
several gradient steps under a fixed target network samples all its mini-batches at once and runs
the target network once over all of them.

The math follows `qlearn.targets` (TD and Double-DQN targets), `torch.nn.functional.mse_loss` /
`smooth_l1_loss`, `torch.nn.utils.clip_grad_norm_` and `torch.optim.Adam`; the tests check one
update against the torch engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from qlearn.config import DQNConfig
from qlearn.replay import Batch, ReplayMemory

# Rows of one target-network pass over a phase's mini-batches; bounds its activation memory.
MAX_TARGET_ROWS = 16_384


def unsupported(config: DQNConfig, torso: str) -> list[str]:
    """The settings that rule this engine out, as `name = value` strings (empty: it applies)."""
    reasons = []
    if config.device != "cpu":
        reasons.append(f"device = {config.device!r}")
    if torso != "mlp":
        reasons.append(f"network = {torso!r}")
    if config.dueling:
        reasons.append("dueling = true")
    if config.noisy:
        reasons.append("noisy = true")
    if config.distributional != "none":
        reasons.append(f"distributional = {config.distributional!r}")
    if config.log_grad_norms:
        reasons.append("log_grad_norms = true")
    return reasons


def flatten_into_views(params: Sequence[torch.Tensor]) -> np.ndarray:
    """Make each parameter's `.data` a view of one new flat float32 array, keeping its values.

    Returns:
        The flat array; writing to it writes the parameters.
    """
    flat = torch.empty(sum(p.numel() for p in params), dtype=torch.float32)
    offset = 0
    for p in params:
        view = flat[offset : offset + p.numel()].view_as(p)
        view.copy_(p.data)
        p.data = view
        offset += p.numel()
    return flat.numpy()


class NumpyMLPEngine:
    """Gradient steps for a plain MLP `QNetwork`, computed in numpy on shared memory.

    Args:
        q_net: the online network (nn.Linear layers with ReLU between them).
        target_net: its target copy.
        optimizer: the torch Adam over `q_net.parameters()`; its hyperparameters are used and its
            state is rebound to this engine's moments.
        config: the agent's config (loss, double_q, max_grad_norm, prioritized, batch_size).
        encode: raw observations -> float32 network inputs.
    """

    def __init__(
        self,
        q_net: nn.Module,
        target_net: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: DQNConfig,
        encode: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        self.config = config
        self.encode = lambda obs: np.asarray(encode(obs), dtype=np.float32)
        self.optimizer = optimizer
        self._online = [m for m in q_net.modules() if isinstance(m, nn.Linear)]
        self._target = [m for m in target_net.modules() if isinstance(m, nn.Linear)]
        self._params = [t for m in self._online for t in (m.weight, m.bias)]
        target_params = [t for m in self._target for t in (m.weight, m.bias)]
        self.flat = flatten_into_views(self._params)
        self.target_flat = flatten_into_views(target_params)
        self.grad = np.zeros_like(self.flat)
        # The flat arrays are never reallocated, so their per-layer views are made once.
        self._online_views = self._views_of(self.flat)
        self._target_views = self._views_of(self.target_flat)
        self._grad_views = self._views_of(self.grad)
        self.exp_avg = np.zeros_like(self.flat)
        self.exp_avg_sq = np.zeros_like(self.flat)
        self.steps = np.zeros(len(self._params), dtype=np.float32)
        self._scratch = np.empty_like(self.flat)
        self.bind_optimizer_state()

    def _views_of(self, flat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(weight (out, in), bias (out,)) views of `flat`, laid out like the parameters."""
        views, offset = [], 0
        for layer in self._online:
            out_f, in_f = layer.weight.shape
            w = flat[offset : offset + out_f * in_f].reshape(out_f, in_f)
            offset += out_f * in_f
            views.append((w, flat[offset : offset + out_f]))
            offset += out_f
        return views

    def bind_optimizer_state(self) -> None:
        """Take over Adam's state: copy any existing moments in, then rebind them as views.

        Called at construction and after `optimizer.load_state_dict` replaced the state tensors.
        """
        exp_avg = torch.from_numpy(self.exp_avg)
        exp_avg_sq = torch.from_numpy(self.exp_avg_sq)
        steps = torch.from_numpy(self.steps)
        offset = 0
        for i, p in enumerate(self._params):
            n = p.numel()
            state = self.optimizer.state[p]
            if "exp_avg" in state:
                self.exp_avg[offset : offset + n] = state["exp_avg"].reshape(-1).numpy()
                self.exp_avg_sq[offset : offset + n] = state["exp_avg_sq"].reshape(-1).numpy()
                self.steps[i] = float(state["step"])
            state["step"] = steps[i]  # torch's own key order: step, exp_avg, exp_avg_sq
            state["exp_avg"] = exp_avg[offset : offset + n].view_as(p)
            state["exp_avg_sq"] = exp_avg_sq[offset : offset + n].view_as(p)
            offset += n

    # ------------------------------------------------------------------ forward and backward
    @staticmethod
    def forward(layers: Sequence[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> list[np.ndarray]:
        """Activations of every layer: [x, relu(h1), ..., output]; weights are (out, in)."""
        acts = [x]
        last = len(layers) - 1
        for i, (w, b) in enumerate(layers):
            h = acts[-1] @ w.T
            h += b
            if i < last:
                np.maximum(h, 0.0, out=h)
            acts.append(h)
        return acts

    def _backward(self, acts: Sequence[np.ndarray], grad_out: np.ndarray) -> None:
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
        c = self.config
        grad = self.grad
        if c.max_grad_norm is not None:
            norm = math.sqrt(float(np.dot(grad, grad)))
            coef = c.max_grad_norm / (norm + 1e-6)
            if coef < 1.0:
                grad *= coef
        group = self.optimizer.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        self.steps += 1
        t = float(self.steps[0])
        m, v, tmp = self.exp_avg, self.exp_avg_sq, self._scratch
        np.subtract(grad, m, out=tmp)
        tmp *= 1.0 - beta1
        m += tmp
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - beta2
        v *= beta2
        v += tmp
        bias1 = 1.0 - beta1**t
        bias2_sqrt = math.sqrt(1.0 - beta2**t)
        np.sqrt(v, out=tmp)
        tmp *= 1.0 / bias2_sqrt
        tmp += eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr / bias1
        self.flat -= tmp

    # ------------------------------------------------------------------ the update
    def target_values(self, next_x: np.ndarray) -> np.ndarray:
        """Target-network Q-values of encoded next observations, (rows, num_actions)."""
        target = self._target_views
        if len(next_x) <= MAX_TARGET_ROWS:
            return self.forward(target, next_x)[-1]
        parts = [
            self.forward(target, next_x[i : i + MAX_TARGET_ROWS])[-1]
            for i in range(0, len(next_x), MAX_TARGET_ROWS)
        ]
        return np.concatenate(parts)

    @np.errstate(over="ignore", invalid="ignore")  # a non-finite loss is reported, not warned
    def step(self, batch: Batch, next_target: np.ndarray) -> tuple[float, float, np.ndarray]:
        """One gradient step on `batch`, given the target network's Q-values of its next_obs.

        Returns:
            (loss, mean Q of the taken actions, |TD error| per sample); the parameters are left
            untouched when the loss is not finite.
        """
        c = self.config
        x = self.encode(batch.obs)
        n = len(x)
        online = self._online_views
        if c.double_q:
            # One pass over obs and next_obs together; only the obs half is backpropagated.
            both = self.forward(online, np.concatenate([x, self.encode(batch.next_obs)]))
            acts = [a[:n] for a in both]
            chosen = both[-1][n:].argmax(axis=1)
            next_value = next_target[np.arange(n), chosen]
        else:
            acts = self.forward(online, x)
            next_value = next_target.max(axis=1)
        rows = np.arange(n)
        q_taken = acts[-1][rows, batch.actions]
        not_done = 1.0 - batch.terminated
        target = batch.returns + batch.discounts * not_done * next_value
        diff = q_taken - target
        weights = batch.weights if c.prioritized else None
        if c.loss == "huber":
            abs_diff = np.abs(diff)
            per_sample = np.where(abs_diff < 1.0, 0.5 * diff * diff, abs_diff - 0.5)
            dloss = np.clip(diff, -1.0, 1.0)
        else:
            per_sample = diff * diff
            dloss = 2.0 * diff
        if weights is not None:
            per_sample = per_sample * weights
            dloss = dloss * weights
        loss = float(np.add.reduce(per_sample)) / n
        if math.isfinite(loss):
            grad_out = np.zeros_like(acts[-1])
            grad_out[rows, batch.actions] = dloss / n
            self._backward(acts, grad_out)
            self._adam()
        return loss, float(np.add.reduce(q_taken)) / n, np.abs(diff)

    def train(
        self,
        replay: ReplayMemory,
        num_updates: int,
        rng: np.random.Generator,
        beta: float,
        on_nonfinite: Callable[[float, int], None],
    ) -> tuple[int, float, float]:
        """`num_updates` gradient steps under the current target network.

        Uniform replay draws every mini-batch of the phase at once and runs the target network
        once over all of them; prioritized replay samples each after the previous one's priority
        update, as the priorities require. A non-finite loss leaves the weights as they were and
        calls `on_nonfinite(loss, updates applied so far)`, which raises or lets the phase go on.

        Returns:
            (updates applied, loss of the last one, its mean Q of the taken actions).
        """
        batch_size = self.config.batch_size
        applied, last = 0, (math.nan, math.nan)
        if self.config.prioritized:
            batches = (replay.sample(batch_size, rng, beta=beta) for _ in range(num_updates))
            targets = None
        else:
            big = replay.sample(num_updates * batch_size, rng)
            targets = self.target_values(self.encode(big.next_obs))
            batches = (_rows(big, i * batch_size, (i + 1) * batch_size) for i in range(num_updates))
        for i, batch in enumerate(batches):
            if targets is None:
                next_target = self.target_values(self.encode(batch.next_obs))
            else:
                next_target = targets[i * batch_size : (i + 1) * batch_size]
            loss, q_mean, td = self.step(batch, next_target)
            if not math.isfinite(loss):
                on_nonfinite(loss, applied)
                continue
            applied += 1
            last = (loss, q_mean)
            if self.config.prioritized:
                replay.update_priorities(batch.indices, td)
        return applied, *last

    def sync_target(self, tau: float) -> None:
        """Copy the online weights into the target (tau = 1), or move toward them (Polyak)."""
        if tau >= 1.0:
            np.copyto(self.target_flat, self.flat)
        else:
            self.target_flat += tau * (self.flat - self.target_flat)


def _rows(batch: Batch, start: int, stop: int) -> Batch:
    """Rows [start, stop) of a batch, as views."""
    rows = slice(start, stop)
    return Batch(
        batch.obs[rows],
        batch.actions[rows],
        batch.returns[rows],
        batch.next_obs[rows],
        batch.terminated[rows],
        batch.discounts[rows],
        batch.weights[rows],
        batch.indices[rows],
    )
