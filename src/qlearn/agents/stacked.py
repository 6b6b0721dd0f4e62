"""Many independent DQN learners in one object: a leading seed axis on weights, Adam and RNGs.

Seed k of a stacked learner is the learner a single run of seed k builds (`DQNLearner(spec,
config.replace(seed=k))`): the same initial weights, its own `numpy.random.Generator` for
exploration and replay sampling, drawn in the same order, and its own replay memory. Batching
the seeds changes the speed, never the result; `tests/agents/test_stacked.py` pins seed k of a
stacked run to a single run of seed k.

Three implementations share one interface (`StackedLearner`); `make_stacked_learner` picks:

- `StackedMLPLearner`, the fast path for plain MLP Q-networks on the CPU (what the numpy engine
  of `qlearn.agents.numpy_mlp` runs for one seed). Weights, gradients and Adam's moments are
  (num_seeds, num_params) float32 arrays; each layer's forward and backward pass is one
  `np.matmul` over (num_seeds, rows, in) @ (num_seeds, in, out), which numpy computes as one
  BLAS gemm per seed with the very shapes of the single-seed engine, so each seed's numbers are
  bit for bit those of its single run. Adam is elementwise, so Adam over the stacked arrays is
  num_seeds separate Adams; gradient-norm clipping is per seed.
- `StackedTorchLearner`, every other network the torch engine runs (dueling heads, C51/QR,
  CNN torsos, `engine = "torch"`): `torch.func.stack_module_state` + `vmap(functional_call)`,
  gradients from `vmap(grad(loss))`, one Adam over the stacked parameters, per-seed clipping.
  Equal to the single runs within float32 rounding (batched products round differently).
- `PerSeedLearners`, what torch.func cannot batch (noisy nets, whose noise comes from each
  seed's own torch generator; `log_grad_norms`; `on_nonfinite = "skip"`): one `DQNLearner`
  per seed, updated one after another. Exact, and no faster than separate runs.

Replay: one `ReplayMemory` per seed (a seed's memory is exactly a single run's), not one array
with a seed axis; sampling gathers each seed's mini-batch and stacks them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from qlearn.agents import numpy_mlp
from qlearn.agents.dqn import DQNLearner, pick_network
from qlearn.agents.engine import TensorBatch, per_sample_loss
from qlearn.config import DQNConfig
from qlearn.envs import EnvSpec, ObsEncoder
from qlearn.errors import ConfigError, TrainingError
from qlearn.exploration import softmax_action
from qlearn.networks import expected_q
from qlearn.replay import Batch, ReplayMemory

MAX_TARGET_ROWS = numpy_mlp.MAX_TARGET_ROWS


def seed_config(config: DQNConfig, seed: int) -> DQNConfig:
    """The config of the single run that seed `seed` of a stacked run equals."""
    return config.replace(seed=seed)


class StackedLearner(Protocol):
    """What the multi-seed trainer needs from a learner with a seed axis."""

    seeds: tuple[int, ...]
    rngs: list[np.random.Generator]
    """Seed k's generator: exploration and replay sampling, as a single run's `learner.rng`."""
    replays: list[ReplayMemory]

    @property
    def num_updates(self) -> int: ...

    def act(self, obs: np.ndarray, epsilon: float) -> np.ndarray:
        """(num_seeds, *obs_shape) observations, one per seed -> (num_seeds,) int64 actions."""
        ...

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """(num_seeds, rows, *obs_shape) -> (num_seeds, rows, num_actions) greedy Q-values."""
        ...

    def update(self, num_updates: int, beta: float) -> list[dict[str, float]]:
        """`num_updates` gradient steps for every seed; each seed's metrics, as DQNLearner's."""
        ...

    def sync_target(self) -> None: ...

    def seed_tensors(self, k: int) -> dict[str, torch.Tensor]:
        """Seed k's checkpoint tensors, keyed as `DQNLearner.tensors()` keys them."""
        ...

    def load_seed_tensors(self, k: int, tensors: dict[str, torch.Tensor]) -> None: ...

    def seed_num_updates(self, k: int) -> int: ...

    def set_seed_num_updates(self, k: int, value: int) -> None: ...


def make_stacked_learner(spec: EnvSpec, config: DQNConfig, seeds: Sequence[int]) -> StackedLearner:
    """The fastest learner that equals `len(seeds)` single runs of `config` (one per seed).

    The stacked numpy engine where the single runs would use the numpy engine (a plain MLP on
    the CPU, `engine` not `torch`), else one `DQNLearner` per seed.
    """
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ConfigError("num_seeds = 0 is invalid; allowed: >= 1")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {list(seeds)} repeat a seed; allowed: distinct seeds")
    learners = [DQNLearner(spec, seed_config(config, s)) for s in seeds]
    if isinstance(learners[0].engine, numpy_mlp.NumpyMLPEngine):
        return StackedMLPLearner(spec, config, learners)
    if not torch_func_unsupported(config):
        return StackedTorchLearner(spec, config, learners)
    return PerSeedLearners(learners)


# ---------------------------------------------------------------------- per-seed fallback
class PerSeedLearners:
    """One `DQNLearner` per seed, acting and updating one after another (any variant)."""

    def __init__(self, learners: Sequence[DQNLearner]) -> None:
        self.learners = list(learners)
        self.seeds = tuple(lr.config.seed for lr in self.learners)
        self.rngs = [lr.rng for lr in self.learners]
        self.replays = [lr.replay for lr in self.learners]

    @property
    def num_updates(self) -> int:
        return min(lr.num_updates for lr in self.learners)

    def act(self, obs: np.ndarray, epsilon: float) -> np.ndarray:
        return np.array(
            [int(lr.act(o[None], epsilon)[0]) for lr, o in zip(self.learners, obs, strict=True)]
        )

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        out = []
        for lr, o in zip(self.learners, obs, strict=True):
            was_training = lr.q_net.training
            lr.q_net.eval()  # noise off, as DQNLearner.predict does
            try:
                out.append(lr.q_values(o))
            finally:
                lr.q_net.train(was_training)
        return np.stack(out)

    def update(self, num_updates: int, beta: float) -> list[dict[str, float]]:
        return [lr.update(num_updates, beta) for lr in self.learners]

    def sync_target(self) -> None:
        for lr in self.learners:
            lr.sync_target()

    def seed_tensors(self, k: int) -> dict[str, torch.Tensor]:
        return self.learners[k].tensors()

    def load_seed_tensors(self, k: int, tensors: dict[str, torch.Tensor]) -> None:
        self.learners[k].load_tensors(tensors)

    def seed_num_updates(self, k: int) -> int:
        return self.learners[k].num_updates

    def set_seed_num_updates(self, k: int, value: int) -> None:
        self.learners[k].num_updates = value


# ---------------------------------------------------------------------- both stacked learners
class _SeedStack:
    """What both stacked learners keep per seed, and how each seed acts.

    Subclasses set up the stacked networks and define `_greedy_q` and `q_values`.
    """

    def __init__(self, spec: EnvSpec, config: DQNConfig, learners: Sequence[DQNLearner]) -> None:
        self.config = config
        self.spec = spec
        self.encoder = ObsEncoder(spec)
        self.num_actions = spec.num_actions
        self.seeds = tuple(lr.config.seed for lr in learners)
        self.num_seeds = len(learners)
        self.rngs = [lr.rng for lr in learners]
        self.replays = [lr.replay for lr in learners]
        self._torch_rng_states = [lr.torch_rng.get_state() for lr in learners]
        self._num_updates = np.zeros(self.num_seeds, dtype=np.int64)

    @property
    def num_updates(self) -> int:
        return int(self._num_updates.min())

    def seed_num_updates(self, k: int) -> int:
        return int(self._num_updates[k])

    def set_seed_num_updates(self, k: int, value: int) -> None:
        self._num_updates[k] = value

    def _greedy_q(self, obs: np.ndarray, greedy: list[int]) -> np.ndarray:
        raise NotImplementedError

    def act(self, obs: np.ndarray, epsilon: float) -> np.ndarray:
        """Each seed draws as a single run's `DQNLearner.act` does with one env: a uniform
        number against epsilon, then either a random action or the policy's."""
        actions = np.empty(self.num_seeds, dtype=np.int64)
        greedy = []
        for k, rng in enumerate(self.rngs):
            if rng.random() < epsilon:
                actions[k] = rng.integers(self.num_actions)
            else:
                greedy.append(k)
        if greedy:
            q = self._greedy_q(obs, greedy)  # (len(greedy), num_actions)
            if self.config.exploration == "softmax":
                for j, k in enumerate(greedy):
                    actions[k] = softmax_action(
                        q[j : j + 1], self.config.temperature, self.rngs[k]
                    )[0]
            else:
                actions[greedy] = q.argmax(axis=1)
        return actions


# ---------------------------------------------------------------------- stacked numpy engine
def _linears(net: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]


class StackedMLPLearner(_SeedStack):
    """Plain-MLP DQN learners for several seeds, updated together with batched matmuls.

    Args:
        spec: the env's spaces.
        config: the shared hyperparameters (its `seed` is ignored: the learners carry theirs).
        learners: one freshly built `DQNLearner` per seed, whose initial weights, torch
            generator and replay memory are taken over (their networks are not used after).
    """

    def __init__(self, spec: EnvSpec, config: DQNConfig, learners: Sequence[DQNLearner]) -> None:
        torso = pick_network(config, spec)
        reasons = numpy_mlp.unsupported(config, torso)
        if reasons:
            raise ConfigError(
                f"the stacked numpy engine runs plain MLP networks on the CPU only; this config "
                f"has {', '.join(reasons)}"
            )
        super().__init__(spec, config, learners)

        layers = _linears(learners[0].q_net)
        self._names = [name for name, _ in layers]
        self._shapes = [tuple(m.weight.shape) for _, m in layers]  # (out, in) per layer
        sizes = [o * i + o for o, i in self._shapes]
        num_params = sum(sizes)
        s = self.num_seeds
        self.flat = np.empty((s, num_params), dtype=np.float32)
        self.target_flat = np.empty_like(self.flat)
        for k, lr in enumerate(learners):
            self.flat[k] = _flat_params(lr.q_net)
            self.target_flat[k] = _flat_params(lr.target_net)
        self.grad = np.zeros_like(self.flat)
        self.exp_avg = np.zeros_like(self.flat)
        self.exp_avg_sq = np.zeros_like(self.flat)
        self.steps = np.zeros(s, dtype=np.float32)  # Adam's step count per seed
        self._scratch = np.empty_like(self.flat)
        self._online = self._views_of(self.flat)
        self._target = self._views_of(self.target_flat)
        self._grads = self._views_of(self.grad)

    def _views_of(self, flat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(weight (S, out, in), bias (S, out)) views of a (S, num_params) array."""
        views, offset = [], 0
        s = self.num_seeds
        for out_f, in_f in self._shapes:
            w = flat[:, offset : offset + out_f * in_f].reshape(s, out_f, in_f)
            offset += out_f * in_f
            views.append((w, flat[:, offset : offset + out_f]))
            offset += out_f
        return views

    # ------------------------------------------------------------------ forward
    @staticmethod
    def forward(layers: Sequence[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> list[np.ndarray]:
        """Activations [x, relu(h1), ..., output], each (S, rows, features)."""
        acts = [x]
        last = len(layers) - 1
        for i, (w, b) in enumerate(layers):
            h = np.matmul(acts[-1], w.transpose(0, 2, 1))
            h += b[:, None, :]
            if i < last:
                np.maximum(h, 0.0, out=h)
            acts.append(h)
        return acts

    def _encode(self, obs: np.ndarray) -> np.ndarray:
        """(S, rows, *obs_shape) raw -> (S, rows, input_dim) float32."""
        s, rows = obs.shape[:2]
        flat = self.encoder(obs.reshape(s * rows, *obs.shape[2:]))
        return np.asarray(flat, dtype=np.float32).reshape(s, rows, -1)

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        return self.forward(self._online, self._encode(obs))[-1]

    def _greedy_q(self, obs: np.ndarray, greedy: list[int]) -> np.ndarray:
        """Q-values of the seeds `greedy` (all of them, or those not exploring), (len, A)."""
        if len(greedy) == self.num_seeds:
            return self.q_values(obs[:, None])[:, 0]  # (S, num_actions)
        layers = [(w[greedy], b[greedy]) for w, b in self._online]
        return self.forward(layers, self._encode(obs[greedy][:, None]))[-1][:, 0]

    # ------------------------------------------------------------------ the update
    def _target_values(self, next_x: np.ndarray) -> np.ndarray:
        """Target-network Q-values (S, rows, A).

        Each seed's rows go through in the single engine's chunks of MAX_TARGET_ROWS (the same
        products, so the same numbers), and the seeds in groups of at most MAX_TARGET_ROWS rows
        in all, so the activations held at once do not grow with the number of seeds.
        """
        s, rows = next_x.shape[:2]
        if rows > MAX_TARGET_ROWS:
            parts = [
                self._target_values(next_x[:, i : i + MAX_TARGET_ROWS])
                for i in range(0, rows, MAX_TARGET_ROWS)
            ]
            return np.concatenate(parts, axis=1)
        group = max(1, MAX_TARGET_ROWS // rows)
        if group >= s:
            return self.forward(self._target, next_x)[-1]
        out = np.empty((s, rows, self.num_actions), dtype=np.float32)
        for i in range(0, s, group):
            layers = [(w[i : i + group], b[i : i + group]) for w, b in self._target]
            out[i : i + group] = self.forward(layers, next_x[i : i + group])[-1]
        return out

    def _backward(self, acts: Sequence[np.ndarray], grad_out: np.ndarray) -> None:
        g = grad_out
        for i in range(len(self._online) - 1, -1, -1):
            h_in = acts[i]
            dw, db = self._grads[i]
            np.matmul(g.transpose(0, 2, 1), h_in, out=dw)
            np.add.reduce(g, axis=1, out=db)
            if i:
                g = np.matmul(g, self._online[i][0])
                g *= h_in > 0

    def _adam(self, apply: np.ndarray) -> None:
        """Per-seed gradient clipping, then Adam on the seeds where `apply` is True."""
        keep = None
        if not apply.all():
            skipped = ~apply
            keep = (self.flat[skipped].copy(), self.exp_avg[skipped].copy())
            keep += (self.exp_avg_sq[skipped].copy(),)
        self.steps += apply
        rows = (self.flat, self.grad, self.exp_avg, self.exp_avg_sq, self._scratch)
        numpy_mlp.adam_rows(*rows, self.steps, self.config)
        if keep is not None:
            skipped = ~apply
            self.flat[skipped], self.exp_avg[skipped], self.exp_avg_sq[skipped] = keep

    @np.errstate(over="ignore", invalid="ignore")
    def _step(
        self, batch: _StackedBatch, next_target: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One gradient step per seed; as `NumpyMLPEngine.step` with a seed axis.

        Returns:
            (S,) losses, (S,) mean Q of the taken actions, (S, B) |TD error|.
        """
        c = self.config
        obs = batch.x
        n = obs.shape[1]
        online = self._online
        actions = batch.actions[..., None]  # (S, B, 1)
        if c.double_q:
            both = self.forward(online, np.concatenate([obs, batch.next_x], axis=1))
            acts = [a[:, :n] for a in both]
            chosen = both[-1][:, n:].argmax(axis=2)[..., None]
            next_value = np.take_along_axis(next_target, chosen, axis=2)[..., 0]
        else:
            acts = self.forward(online, obs)
            next_value = next_target.max(axis=2)
        q_taken = np.take_along_axis(acts[-1], actions, axis=2)[..., 0]  # (S, B)
        not_done = 1.0 - batch.terminated
        target = batch.returns + batch.discounts * not_done * next_value
        diff = q_taken - target
        weights = batch.weights if c.prioritized else None
        per_sample, dloss = numpy_mlp.loss_terms(diff, c.loss, weights)
        loss = np.add.reduce(per_sample, axis=1) / n  # (S,)
        finite = np.isfinite(loss)
        if finite.any():
            grad_out = np.zeros_like(acts[-1])
            np.put_along_axis(grad_out, actions, (dloss / n)[..., None], axis=2)
            self._backward(acts, grad_out)
            self._adam(finite)
        return loss, np.add.reduce(q_taken, axis=1) / n, np.abs(diff)

    def update(self, num_updates: int, beta: float) -> list[dict[str, float]]:
        """`num_updates` gradient steps for every seed under the current target networks.

        Uniform replay: each seed draws all its mini-batches of the phase at once from its own
        generator (as the single engine does) and the target networks run once over them.
        Prioritized replay: one mini-batch per seed per step, priorities updated in between.
        """
        c = self.config
        b = c.batch_size
        s = self.num_seeds
        applied = np.zeros(s, dtype=np.int64)
        last_loss = np.full(s, math.nan)
        last_q = np.full(s, math.nan)
        if c.prioritized:
            for _ in range(num_updates):
                batches = [
                    r.sample(b, g, beta=beta) for r, g in zip(self.replays, self.rngs, strict=True)
                ]
                batch = self._stack(batches)
                next_target = self._target_values(batch.next_x)
                loss, q_mean, td = self._step(batch, next_target)
                self._record(loss, q_mean, applied, last_loss, last_q)
                for k, r in enumerate(self.replays):
                    if math.isfinite(loss[k]):
                        r.update_priorities(batches[k].indices, td[k])
        else:
            big = self._stack(
                [r.sample(num_updates * b, g) for r, g in zip(self.replays, self.rngs, strict=True)]
            )
            targets = self._target_values(big.next_x)
            for i in range(num_updates):
                rows = slice(i * b, (i + 1) * b)
                batch = big.rows(rows)
                loss, q_mean, _ = self._step(batch, targets[:, rows])
                self._record(loss, q_mean, applied, last_loss, last_q)
        self._num_updates += applied
        return [
            {"loss": float(last_loss[k]), "q_mean": float(last_q[k])} if applied[k] else {}
            for k in range(s)
        ]

    def _record(
        self,
        loss: np.ndarray,
        q_mean: np.ndarray,
        applied: np.ndarray,
        last_loss: np.ndarray,
        last_q: np.ndarray,
    ) -> None:
        finite = np.isfinite(loss)
        if not finite.all():
            k = int(np.flatnonzero(~finite)[0])
            message = (
                f"non-finite loss ({loss[k]}) at update {self._num_updates[k] + applied[k]} of "
                f"seed {self.seeds[k]}; lower learning_rate, check rewards for NaN/inf, or set "
                "on_nonfinite='skip'"
            )
            if self.config.on_nonfinite == "error":
                raise TrainingError(message)
            warnings.warn(f"skipped an update: {message}", RuntimeWarning, stacklevel=3)
        applied += finite
        last_loss[finite] = loss[finite]
        last_q[finite] = q_mean[finite]

    def _stack(self, batches: Sequence[Batch]) -> _StackedBatch:
        return _StackedBatch(
            x=self._encode(np.stack([bt.obs for bt in batches])),
            next_x=self._encode(np.stack([bt.next_obs for bt in batches])),
            actions=np.stack([bt.actions for bt in batches]),
            returns=np.stack([bt.returns for bt in batches]),
            terminated=np.stack([bt.terminated for bt in batches]),
            discounts=np.stack([bt.discounts for bt in batches]),
            weights=np.stack([bt.weights for bt in batches]),
        )

    def sync_target(self) -> None:
        tau = self.config.tau
        if tau >= 1.0:
            np.copyto(self.target_flat, self.flat)
        else:
            self.target_flat += tau * (self.flat - self.target_flat)

    # ------------------------------------------------------------------ state
    def seed_tensors(self, k: int) -> dict[str, torch.Tensor]:
        """Seed k's tensors in `DQNLearner.tensors()`'s keys and layout."""
        out: dict[str, torch.Tensor] = {}
        for net, views in (("q_net", self._online), ("target_net", self._target)):
            for name, (w, b) in zip(self._names, views, strict=True):
                out[f"{net}.{name}.weight"] = torch.from_numpy(w[k].copy())
                out[f"{net}.{name}.bias"] = torch.from_numpy(b[k].copy())
        if self.steps[k] > 0:
            m_views, v_views = self._views_of(self.exp_avg), self._views_of(self.exp_avg_sq)
            for i, ((mw, mb), (vw, vb)) in enumerate(zip(m_views, v_views, strict=True)):
                step = torch.tensor(float(self.steps[k]))
                out[f"optim.{2 * i}.step"] = step
                out[f"optim.{2 * i}.exp_avg"] = torch.from_numpy(mw[k].copy())
                out[f"optim.{2 * i}.exp_avg_sq"] = torch.from_numpy(vw[k].copy())
                out[f"optim.{2 * i + 1}.step"] = step.clone()
                out[f"optim.{2 * i + 1}.exp_avg"] = torch.from_numpy(mb[k].copy())
                out[f"optim.{2 * i + 1}.exp_avg_sq"] = torch.from_numpy(vb[k].copy())
        out["torch_rng"] = self._torch_rng_states[k].clone()
        return out

    def load_seed_tensors(self, k: int, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what `seed_tensors(k)` produced (or a single run's `tensors()`)."""
        views = {"q_net": self._online, "target_net": self._target}
        for net, layers in views.items():
            for name, (w, b) in zip(self._names, layers, strict=True):
                w[k] = tensors[f"{net}.{name}.weight"].numpy()
                b[k] = tensors[f"{net}.{name}.bias"].numpy()
        m_views, v_views = self._views_of(self.exp_avg), self._views_of(self.exp_avg_sq)
        step = 0.0
        for i, ((mw, mb), (vw, vb)) in enumerate(zip(m_views, v_views, strict=True)):
            for j, (m, v) in ((2 * i, (mw, vw)), (2 * i + 1, (mb, vb))):
                if f"optim.{j}.exp_avg" in tensors:
                    m[k] = tensors[f"optim.{j}.exp_avg"].numpy().reshape(m[k].shape)
                    v[k] = tensors[f"optim.{j}.exp_avg_sq"].numpy().reshape(v[k].shape)
                    step = float(tensors[f"optim.{j}.step"])
                else:
                    m[k], v[k] = 0.0, 0.0
        self.steps[k] = step
        if "torch_rng" in tensors:
            self._torch_rng_states[k] = tensors["torch_rng"].clone()


@dataclasses.dataclass
class _StackedBatch:
    """Mini-batches of every seed, stacked: (S, B, ...) arrays, observations encoded."""

    x: np.ndarray  # (S, B, input_dim) float32
    next_x: np.ndarray  # (S, B, input_dim) float32
    actions: np.ndarray  # (S, B) int64
    returns: np.ndarray  # (S, B) float32
    terminated: np.ndarray  # (S, B) float32
    discounts: np.ndarray  # (S, B) float32
    weights: np.ndarray  # (S, B) float32

    def rows(self, rows: slice) -> _StackedBatch:
        """Rows `rows` of every seed's mini-batch, as views."""
        return _StackedBatch(
            **{f.name: getattr(self, f.name)[:, rows] for f in dataclasses.fields(self)}
        )


def _flat_params(net: nn.Module) -> np.ndarray:
    """A plain MLP's Linear weights and biases, flattened in layer order (numpy_mlp's layout)."""
    parts = []
    for _, m in _linears(net):
        parts += [m.weight.detach().reshape(-1), m.bias.detach().reshape(-1)]
    return torch.cat(parts).numpy().astype(np.float32)


# ---------------------------------------------------------------------- stacked torch engine
def torch_func_unsupported(config: DQNConfig) -> list[str]:
    """Settings the torch.func learner does not run (they fall back to `PerSeedLearners`)."""
    reasons = []
    if config.noisy:
        reasons.append("noisy = true (each seed's noise comes from its own torch generator)")
    if config.log_grad_norms:
        reasons.append("log_grad_norms = true")
    if config.on_nonfinite == "skip":
        reasons.append("on_nonfinite = 'skip' (one Adam step counter for all seeds)")
    return reasons


class StackedTorchLearner(_SeedStack):
    """Any non-noisy Q-network (dueling, C51/QR, CNN torsos) for several seeds, in torch.func.

    The seeds' networks are stacked with `torch.func.stack_module_state` (a leading seed axis
    on every parameter) and run with `vmap(functional_call)`; the gradient of every seed's loss
    comes from one `vmap(grad(...))`. One `torch.optim.Adam` steps the stacked parameters: Adam
    is elementwise, so this is one Adam per seed. Gradient-norm clipping is per seed.

    The loss is the torch engine's own (`engine.per_sample_loss`), vmapped over seeds. Batched
    matrix products round differently from the single run's, so a seed matches its single run
    to float tolerance, not bit for bit (`tests/agents/test_stacked.py`).
    """

    def __init__(self, spec: EnvSpec, config: DQNConfig, learners: Sequence[DQNLearner]) -> None:
        from torch.func import stack_module_state

        super().__init__(spec, config, learners)
        self.device = learners[0].device
        self.support = learners[0].support
        params, self.buffers = stack_module_state([lr.q_net for lr in learners])
        target_params, self.target_buffers = stack_module_state([lr.target_net for lr in learners])
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self.target_params = {k: v.detach().clone() for k, v in target_params.items()}
        self.base = copy.deepcopy(learners[0].q_net).to("meta")
        self.optimizer = torch.optim.Adam(
            list(self.params.values()), lr=config.learning_rate, eps=config.adam_eps
        )
        self._names = list(self.params)

    # ------------------------------------------------------------------ forward
    def _forward_one(
        self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        from torch.func import functional_call

        return functional_call(self.base, (params, buffers), (x,))

    def _forward(
        self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        """(S, rows, ...) inputs -> (S, rows, actions[, atoms]) outputs of every seed's net."""
        from torch.func import vmap

        return vmap(self._forward_one)(params, buffers, x)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, device=self.device)

    def _encode(self, obs: np.ndarray) -> torch.Tensor:
        s, rows = obs.shape[:2]
        x = self.encoder(obs.reshape(s * rows, *obs.shape[2:]))
        return self._tensor(np.ascontiguousarray(x)).reshape(s, rows, *x.shape[1:])

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = self._forward(self.params, self.buffers, self._encode(obs))
            s, rows = out.shape[:2]
            q = expected_q(out.flatten(0, 1), self.config.distributional, self.support)
            return q.reshape(s, rows, -1).cpu().numpy()

    def _greedy_q(self, obs: np.ndarray, greedy: list[int]) -> np.ndarray:
        """Q-values of the seeds `greedy`, (len, A); one vmapped pass over every seed."""
        return self.q_values(obs[:, None])[:, 0][greedy]

    # ------------------------------------------------------------------ the update
    def _seed_loss(
        self,
        params: dict[str, torch.Tensor],
        target_params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        batch: tuple[torch.Tensor, ...],
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One seed's mean loss and (loss, mean Q taken, per-sample priority); as
        `engine.per_sample_loss` for one seed."""
        c = self.config
        *tensors, weights = batch
        per_sample, q_taken, priority = per_sample_loss(
            lambda x: self._forward_one(params, buffers, x),
            lambda x: self._forward_one(target_params, buffers, x),
            TensorBatch(*tensors),
            c,
            self.support,
        )
        loss = (per_sample * weights).mean() if c.prioritized else per_sample.mean()
        return loss, (loss.detach(), q_taken.detach().mean(), priority)

    def update(self, num_updates: int, beta: float) -> list[dict[str, float]]:
        """`num_updates` gradient steps for every seed, each on a fresh mini-batch per seed."""
        from torch.func import grad, vmap

        c = self.config
        grad_fn = vmap(grad(self._seed_loss, has_aux=True))
        loss = q_mean = torch.full((self.num_seeds,), math.nan)
        for _ in range(num_updates):
            batches = [
                r.sample(c.batch_size, g, beta=beta)
                for r, g in zip(self.replays, self.rngs, strict=True)
            ]
            stacked = (
                self._encode(np.stack([b.obs for b in batches])),
                self._encode(np.stack([b.next_obs for b in batches])),
                self._tensor(np.stack([b.actions for b in batches])),
                self._tensor(np.stack([b.returns for b in batches])),
                self._tensor(np.stack([b.terminated for b in batches])),
                self._tensor(np.stack([b.discounts for b in batches])),
                self._tensor(np.stack([b.weights for b in batches])),
            )
            detached = {k: v.detach() for k, v in self.params.items()}
            grads, (loss, q_mean, priority) = grad_fn(
                detached, self.target_params, self.buffers, stacked
            )
            bad = ~torch.isfinite(loss)
            if bad.any():
                k = int(bad.nonzero()[0])
                raise TrainingError(
                    f"non-finite loss ({float(loss[k])}) at update {self._num_updates[k]} of "
                    f"seed {self.seeds[k]}; lower learning_rate or check rewards for NaN/inf"
                )
            grad_list = [grads[name] for name in self._names]
            if c.max_grad_norm is not None:
                norms = torch.stack(
                    [torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grad_list], dim=1
                )
                total = torch.linalg.vector_norm(norms, dim=1)  # (S,)
                coef = (c.max_grad_norm / (total + 1e-6)).clamp(max=1.0)
                for g in grad_list:
                    g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
            for name, g in zip(self._names, grad_list, strict=True):
                self.params[name].grad = g
            self.optimizer.step()
            self._num_updates += 1
            if c.prioritized:
                td = priority.cpu().numpy()
                for k, (r, b) in enumerate(zip(self.replays, batches, strict=True)):
                    r.update_priorities(b.indices, td[k])
        return [
            {"loss": float(loss[k]), "q_mean": float(q_mean[k])} if num_updates else {}
            for k in range(self.num_seeds)
        ]

    def sync_target(self) -> None:
        online = [self.params[n].detach() for n in self._names]
        target = [self.target_params[n] for n in self._names]
        with torch.no_grad():
            if self.config.tau >= 1.0:
                torch._foreach_copy_(target, online)
            else:
                torch._foreach_lerp_(target, online, self.config.tau)

    # ------------------------------------------------------------------ state
    def seed_tensors(self, k: int) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for prefix, params in (("q_net", self.params), ("target_net", self.target_params)):
            for name, value in {**params, **self.buffers}.items():
                out[f"{prefix}.{name}"] = value[k].detach().clone()
        for i, name in enumerate(self._names):
            state = self.optimizer.state.get(self.params[name])
            if state:
                out[f"optim.{i}.step"] = torch.as_tensor(state["step"]).clone().float()
                out[f"optim.{i}.exp_avg"] = state["exp_avg"][k].clone()
                out[f"optim.{i}.exp_avg_sq"] = state["exp_avg_sq"][k].clone()
        out["torch_rng"] = self._torch_rng_states[k].clone()
        return out

    def load_seed_tensors(self, k: int, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for prefix, params in (("q_net", self.params), ("target_net", self.target_params)):
                for name, value in {**params, **self.buffers}.items():
                    value[k].copy_(tensors[f"{prefix}.{name}"])
            for i, name in enumerate(self._names):
                if f"optim.{i}.exp_avg" not in tensors:
                    continue
                p = self.params[name]
                state = self.optimizer.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] = torch.as_tensor(tensors[f"optim.{i}.step"]).clone().float()
                state["exp_avg"][k].copy_(tensors[f"optim.{i}.exp_avg"])
                state["exp_avg_sq"][k].copy_(tensors[f"optim.{i}.exp_avg_sq"])
        if "torch_rng" in tensors:
            self._torch_rng_states[k] = tensors["torch_rng"].clone()
