"""Update engines: what takes the DQN learner's gradient steps, and the torch one.

An `UpdateEngine` owns the online and target networks' parameters and the optimizer state. The
learner samples mini-batches from replay and hands them over; the engine computes the variant's
targets (`qlearn.targets`), the loss and its gradient, and takes the optimizer steps. Two
engines implement the protocol:

- `TorchEngine` (here): any network, any variant, on any device; autograd and torch's Adam.
- `NumpyMLPEngine` (`qlearn.agents.numpy_mlp`): plain MLPs on the CPU, explicit backprop and
  Adam in numpy, several times faster at CartPole sizes.

Both write their state as the same checkpoint tensors (`q_net.<name>`, `target_net.<name>`,
`optim.<i>.step|exp_avg|exp_avg_sq`, as torch's `state_dict()` names them), so a checkpoint of
either loads into the other, and checkpoints written before the engines were split out load too.

    data flow:  replay --Batch--> engine.update --> online net --(sync_target)--> target net
                                       ^                                             |
                                       +-------- next-state values (targets.py) <----+
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from qlearn import targets
from qlearn.config import DQNConfig
from qlearn.diagnostics import layer_grad_norms
from qlearn.envs import ObsEncoder
from qlearn.errors import TrainingError
from qlearn.networks import QNetwork, expected_q, mlp_forward
from qlearn.replay import Batch

NonfiniteHandler = Callable[[float, int], None]
"""Called with a non-finite loss and the steps applied before it; raises to stop the update,
or returns to skip that step (its weights stay as they were) and go on."""


def raise_on_nonfinite(loss: float, applied: int) -> None:
    """The default `NonfiniteHandler`: stop with a TrainingError."""
    raise TrainingError(f"non-finite loss ({loss}) after {applied} gradient steps")


@dataclasses.dataclass(slots=True)
class UpdateResult:
    """What `UpdateEngine.update` did.

    Attributes:
        num_applied: gradient steps taken; a step with a non-finite loss is skipped.
        loss: the last applied step's mean loss (NaN when none was applied).
        q_mean: the last applied step's mean Q-value of the taken actions (NaN likewise).
        priorities: (rows,) new replay priorities of the batch's rows, None unless the config
            is prioritized: |TD error| for scalar heads, the per-sample loss for distributional
            ones (as in Rainbow); NaN in the rows of a skipped step.
        grad_norms: per-layer gradient norms of the last applied step (`log_grad_norms`).
    """

    num_applied: int
    loss: float
    q_mean: float
    priorities: np.ndarray | None = None
    grad_norms: dict[str, float] = dataclasses.field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """{"loss", "q_mean", "grad_norm/<layer>"...} of the last applied step; empty if none."""
        if not self.num_applied:
            return {}
        out = {"loss": self.loss, "q_mean": self.q_mean}
        out.update((f"grad_norm/{k}", v) for k, v in self.grad_norms.items())
        return out


@runtime_checkable
class UpdateEngine(Protocol):
    """Gradient steps on the online network under a fixed target network, and their state."""

    def update(
        self, batch: Batch, num_steps: int = 1, on_nonfinite: NonfiniteHandler = raise_on_nonfinite
    ) -> UpdateResult:
        """`num_steps` gradient steps, step i on rows [i B, (i + 1) B) of `batch`, where B =
        len(batch) / num_steps, all under the current target network (which an engine may
        evaluate once over the whole batch). Prioritized replay passes one batch at a time, as
        its priorities change between samples. Noisy networks draw fresh noise before each
        step."""
        ...

    def sync_target(self, tau: float) -> None:
        """Copy the online weights into the target network (tau = 1), or move the target
        toward them by Polyak averaging: θ⁻ ← τ θ + (1 − τ) θ⁻."""
        ...

    def q_values(self, x: np.ndarray) -> np.ndarray:
        """(rows, num_actions) Q-values of encoded inputs (`ObsEncoder`), under the online
        network's current noise and mode."""
        ...

    def network(self) -> QNetwork:
        """The online network as a torch module with the current weights (export, noise,
        diagnostics). Only the torch engine trains this module itself: for another engine it is
        a copy, refreshed when asked for, and changing it changes nothing."""
        ...

    def target_network(self) -> QNetwork:
        """The target network, as `network()` gives the online one."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Both networks and the optimizer state as checkpoint tensors: `q_net.<name>`,
        `target_net.<name>` and `optim.<i>.step|exp_avg|exp_avg_sq` (parameter i in
        `network().parameters()` order). The tensors may share memory with the engine."""
        ...

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Restore what `state_dict()` produced (other keys are ignored); raises KeyError,
        RuntimeError or ValueError, naming the key, when a tensor is missing or does not fit."""
        ...


# ---------------------------------------------------------------------- shared by the engines


def join_state(
    online: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    optim: Mapping[int, Mapping[str, Any]],
) -> dict[str, torch.Tensor]:
    """Checkpoint tensors from the networks' state dicts and per-parameter optimizer state."""
    out = {f"q_net.{k}": v for k, v in online.items()}
    out.update((f"target_net.{k}", v) for k, v in target.items())
    for i, state in optim.items():
        for name, value in state.items():
            out[f"optim.{i}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def split_state(
    tensors: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[int, dict[str, torch.Tensor]]]:
    """The inverse of `join_state`: (online, target, optim); keys of other prefixes are left."""
    online: dict[str, torch.Tensor] = {}
    target: dict[str, torch.Tensor] = {}
    optim: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("q_net."):
            online[key[len("q_net.") :]] = value
        elif key.startswith("target_net."):
            target[key[len("target_net.") :]] = value
        elif key.startswith("optim."):
            _, i, name = key.split(".", 2)
            optim.setdefault(int(i), {})[name] = value
    return online, target, optim


def rows_per_step(batch: Batch, num_steps: int) -> int:
    """Rows of each of `num_steps` equal slices of `batch`; raises unless they divide it."""
    rows = len(batch.actions)
    if num_steps < 1 or rows % num_steps or not rows:
        raise TrainingError(
            f"num_steps = {num_steps} does not split a batch of {rows} rows; allowed: a "
            "divisor of the rows, >= 1"
        )
    return rows // num_steps


def new_priorities(prioritized: bool, rows: int, num_steps: int) -> np.ndarray | None:
    """Room for the priorities of a several-step update (NaN until a step fills its rows);
    None for one step, whose priorities are its own array, or without prioritized replay."""
    if not prioritized or num_steps == 1:
        return None
    return np.full(rows, np.nan, np.float32)


def batch_rows(batch: Batch, start: int, stop: int) -> Batch:
    """Rows [start, stop) of a batch, as views."""
    rows = slice(start, stop)
    return Batch(*(getattr(batch, f.name)[rows] for f in dataclasses.fields(Batch)))


# ---------------------------------------------------------------------- the torch engine


class TensorBatch(NamedTuple):
    """A replay batch as tensors on the network's device; each (batch,) but the observations."""

    obs: torch.Tensor  # (batch, *obs_shape), encoded
    next_obs: torch.Tensor  # (batch, *obs_shape), encoded
    actions: torch.Tensor  # int64
    returns: torch.Tensor  # k-step discounted returns
    terminated: torch.Tensor
    discounts: torch.Tensor  # gamma^k


def per_sample_loss(
    q_net: Callable[[torch.Tensor], torch.Tensor],
    target_net: Callable[[torch.Tensor], torch.Tensor],
    batch: TensorBatch,
    config: DQNConfig,
    support: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample loss, Q-values of the taken actions, and the new priorities; each (batch,).

    The one loss of every torch-run variant (Double DQN, Huber or MSE, C51, QR-DQN), for
    `TorchEngine` and, per seed under `torch.func.vmap`, for the stacked torch learner; so it
    indexes with `gather` only. The priority is |TD error| for scalar heads and the per-sample
    loss for distributional ones (as in Rainbow, where the cross-entropy stands in for the TD
    error).

    Args:
        q_net: the online network, (batch, *obs_shape) -> (batch, num_actions[, num_atoms]).
        target_net: the target network, the same shapes.
        batch: the mini-batch.
        config: the variant (`distributional`, `double_q`, `loss`, `prioritized`).
        support: (num_atoms,) C51's atoms (unused by other heads).
    """
    c = config
    obs, next_obs, actions = batch.obs, batch.next_obs, batch.actions
    returns, terminated, discounts = batch.returns, batch.terminated, batch.discounts
    n = actions.shape[0]
    taken_index = actions[:, None]  # (batch, 1)
    if c.distributional == "none":
        if c.double_q:
            # One pass over obs and next_obs together: half the forward calls.
            both = q_net(torch.cat([obs, next_obs]))
            out, next_online = both[:n], both[n:].detach()
        else:
            out = q_net(obs)
        q_taken = out.gather(1, taken_index).squeeze(1)  # (batch,)
        with torch.no_grad():
            next_target = target_net(next_obs)  # (batch, num_actions)
            if c.double_q:
                target = targets.double_q_target(
                    returns, discounts, terminated, next_online, next_target
                )
            else:
                target = targets.td_target(returns, discounts, terminated, next_target)
        if c.loss == "huber":
            per_sample = nn.functional.smooth_l1_loss(q_taken, target, reduction="none")
        else:
            per_sample = nn.functional.mse_loss(q_taken, target, reduction="none")
        priority = (q_taken - target).detach().abs() if c.prioritized else per_sample
        return per_sample, q_taken, priority

    out = q_net(obs)
    with torch.no_grad():
        next_out = target_net(next_obs)  # (batch, num_actions, num_atoms)
        chooser = q_net(next_obs) if c.double_q else next_out
        chooser_q = expected_q(chooser, c.distributional, support)
        next_dist = targets.greedy_value(chooser_q, next_out)  # (batch, num_atoms)
    atoms = out.shape[-1]
    taken = out.gather(1, taken_index[:, :, None].expand(-1, 1, atoms)).squeeze(1)
    if c.distributional == "c51":
        with torch.no_grad():
            target_probs = targets.c51_project(
                next_dist.softmax(-1), returns, discounts, terminated, support
            )
        per_sample = targets.c51_loss(taken, target_probs)
        q_taken = (taken.detach().softmax(-1) * support).sum(-1)
    else:
        with torch.no_grad():
            target_quantiles = targets.bootstrap_target(returns, discounts, terminated, next_dist)
        per_sample = targets.quantile_huber_loss(taken, target_quantiles)
        q_taken = taken.detach().mean(-1)
    return per_sample, q_taken, per_sample.detach()


class TorchEngine:
    """The update in torch: any network and variant, on the config's device.

    Args:
        q_net: the online network, initialised; its copy becomes the target network.
        config: the learner's config (loss, variants, optimizer, device).
        encoder: raw observations -> network inputs.
        generator: where noisy layers draw their noise (the learner's `torch_rng`).
        support: (num_atoms,) C51 atom values on the config's device.
    """

    def __init__(
        self,
        q_net: QNetwork,
        config: DQNConfig,
        encoder: ObsEncoder,
        generator: torch.Generator,
        support: torch.Tensor,
    ) -> None:
        self.config = config
        self.encode = encoder
        self.generator = generator
        self.support = support
        self.device = torch.device(config.device)
        self.q_net = q_net.to(self.device)
        self.target_net = copy.deepcopy(self.q_net)
        self.target_net.requires_grad_(False)
        # The fused kernel does Adam's update in one pass per tensor: ~2x faster on small nets.
        self.optimizer = torch.optim.Adam(
            self.q_net.parameters(), lr=config.learning_rate, eps=config.adam_eps, fused=True
        )
        self._params = list(self.q_net.parameters())
        self._target_params = list(self.target_net.parameters())
        self._layers = self._numpy_layers()

    def _numpy_layers(self) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Numpy views of a plain MLP's weights on the CPU, for `q_values` without torch.

        The views share memory with the parameters, which the optimizer updates in place, so
        they never go stale; at one row numpy's forward pass is several times faster.
        """
        if self.device.type != "cpu" or not self.q_net.plain_mlp:
            return None
        return [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in self.q_net.linears]

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        return tensor if self.device.type == "cpu" else tensor.to(self.device, non_blocking=True)

    # ------------------------------------------------------------------ the protocol
    def update(
        self, batch: Batch, num_steps: int = 1, on_nonfinite: NonfiniteHandler = raise_on_nonfinite
    ) -> UpdateResult:
        c = self.config
        rows = rows_per_step(batch, num_steps)
        priorities = new_priorities(c.prioritized, len(batch.actions), num_steps)
        applied, loss_value, q_mean, norms = 0, math.nan, math.nan, {}
        for i in range(num_steps):
            part = batch if num_steps == 1 else batch_rows(batch, i * rows, (i + 1) * rows)
            if c.noisy:
                self.q_net.reset_noise(self.generator)
                self.target_net.reset_noise(self.generator)
            per_sample, q_taken, priority = self._loss(part)
            if c.prioritized:
                loss = (per_sample * self._tensor(part.weights)).mean()
            else:
                loss = per_sample.mean()  # uniform weights: skip the multiply
            value = loss.item()
            if not math.isfinite(value):
                on_nonfinite(value, applied)
                continue
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            loss_value, q_mean = value, q_taken.mean().item()
            if c.log_grad_norms:
                norms = layer_grad_norms(self.q_net)
            if c.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(self._params, c.max_grad_norm, foreach=True)
            self.optimizer.step()
            applied += 1
            if priorities is not None:
                priorities[i * rows : (i + 1) * rows] = priority.cpu().numpy()
            elif c.prioritized:  # one step: its priorities are the result's
                priorities = priority.cpu().numpy()
        return UpdateResult(applied, loss_value, q_mean, priorities, norms)

    def _loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`per_sample_loss` of this engine's networks on a replay batch."""
        tensors = TensorBatch(
            obs=self._tensor(self.encode(batch.obs)),
            next_obs=self._tensor(self.encode(batch.next_obs)),
            actions=self._tensor(batch.actions),
            returns=self._tensor(batch.returns),
            terminated=self._tensor(batch.terminated),
            discounts=self._tensor(batch.discounts),
        )
        return per_sample_loss(self.q_net, self.target_net, tensors, self.config, self.support)

    def sync_target(self, tau: float) -> None:
        with torch.no_grad():
            if tau >= 1.0:
                torch._foreach_copy_(self._target_params, self._params)
            else:
                torch._foreach_lerp_(self._target_params, self._params, tau)

    def q_values(self, x: np.ndarray) -> np.ndarray:
        if self._layers is not None:
            return mlp_forward(self._layers, x)[-1]
        with torch.inference_mode():
            out = self.q_net(torch.as_tensor(x, device=self.device))
            return expected_q(out, self.config.distributional, self.support).cpu().numpy()

    def network(self) -> QNetwork:
        return self.q_net

    def target_network(self) -> QNetwork:
        return self.target_net

    def state_dict(self) -> dict[str, torch.Tensor]:
        return join_state(
            self.q_net.state_dict(),
            self.target_net.state_dict(),
            self.optimizer.state_dict()["state"],
        )

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor]) -> None:
        online, target, optim = split_state(tensors)
        self.q_net.load_state_dict(online)
        self.target_net.load_state_dict(target)
        opt = self.optimizer.state_dict()
        opt["state"] = optim
        self.optimizer.load_state_dict(opt)
        self._layers = self._numpy_layers()
