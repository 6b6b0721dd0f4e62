"""The DQN learner: networks, optimizer, replay and the update, assembled from the parts below.

Every variant is a flag of `DQNConfig` wired into this one class: Double (`double_q`), Dueling
(`dueling`), prioritized replay (`prioritized`), n-step returns (`n_step`), noisy nets (`noisy`)
and distributional heads (`distributional = "c51" | "qr"`). The env interaction loop lives in
`qlearn.train`; this class only acts on observations and learns from stored transitions.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from qlearn import targets
from qlearn.agents import numpy_mlp
from qlearn.agents.numpy_mlp import NumpyMLPEngine
from qlearn.config import DQNConfig
from qlearn.diagnostics import layer_grad_norms
from qlearn.envs import EnvSpec, ObsEncoder
from qlearn.errors import ConfigError, TrainingError
from qlearn.exploration import softmax_action
from qlearn.networks import NoisyLinear, QNetwork, conv_output_shapes
from qlearn.replay import Batch, ReplayMemory, make_replay
from qlearn.replay.storage import check_fits

FLOAT_BYTES = 4  # networks, gradients, moments and activations are float32
NETWORK_COPIES = 6
"""Float32 copies of the parameters training holds: the online and the target network, the
gradient, Adam's two moments, and the numpy engine's scratch array."""
ACTIVATION_COPIES = 4
"""Copies of each layer's output per batch row an update holds at once: the forward pass over
`obs` kept for backward, its gradient, and the passes over `next_obs` (the target network, and
the online network under Double DQN)."""


def pick_network(config: DQNConfig, spec: EnvSpec) -> str:
    """The torso for `config.network`, choosing by observation shape when it is `auto`."""
    if config.network != "auto":
        if config.network != "mlp" and len(spec.obs_shape) != 3:
            raise ConfigError(
                f"network = {config.network!r} needs image observations (channels, height, "
                f"width); this env has {spec.describe()}"
            )
        return config.network
    if len(spec.obs_shape) == 3:
        return "nature_cnn" if spec.obs_shape[-1] >= 64 else "minatar_cnn"
    return "mlp"


def _build_q_network(spec: EnvSpec, config: DQNConfig, init: str | None = None) -> QNetwork:
    """The Q-network `config` describes for `spec` (on the current default device)."""
    torso = pick_network(config, spec)
    encoder = ObsEncoder(spec)
    return QNetwork(
        encoder.input_shape if torso != "mlp" else encoder.input_dim,
        spec.num_actions,
        config.hidden_sizes,
        torso=torso,
        init=init or config.init,
        dueling=config.dueling,
        noisy=config.noisy,
        noisy_sigma=config.noisy_sigma,
        num_atoms=config.num_atoms if config.distributional != "none" else 1,
    )


@dataclasses.dataclass(frozen=True)
class NetworkLayout:
    """The tensors and activations of a config's Q-network, found without allocating it."""

    state_shapes: dict[str, tuple[int, ...]]
    """Shape of each entry of the network's `state_dict()` (parameters and buffers)."""
    param_shapes: tuple[tuple[int, ...], ...]
    """Shape of each parameter, in `parameters()` order (the optimizer's numbering)."""
    activation_size: int
    """Floats one input row makes: the input plus every linear and convolution layer's output."""

    @property
    def num_params(self) -> int:
        return sum(math.prod(shape) for shape in self.param_shapes)

    @property
    def network_bytes(self) -> int:
        """Bytes of the parameters times NETWORK_COPIES, plus buffers (noise) in both nets."""
        buffers = sum(math.prod(shape) for shape in self.state_shapes.values()) - self.num_params
        return FLOAT_BYTES * (NETWORK_COPIES * self.num_params + 2 * buffers)


def network_layout(spec: EnvSpec, config: DQNConfig) -> NetworkLayout:
    """Shapes and activation size of the network `config` describes for `spec`.

    The network is built on torch's meta device, which records shapes and allocates nothing, so
    this is safe for any config, even one whose network could never fit in memory.
    """
    with torch.device("meta"):
        # Initialisation changes no shape; torch's default skips the schemes' extra work.
        net = _build_q_network(spec, config, init="torch_default")
    encoder = ObsEncoder(spec)
    if pick_network(config, spec) == "mlp":
        activations = encoder.input_dim
    else:
        activations = math.prod(encoder.input_shape)
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        shapes = conv_output_shapes(convs, encoder.input_shape)  # type: ignore[arg-type]
        activations += sum(math.prod(shape) for shape in shapes)
    # Shapes come from the modules, not a forward pass: the first meta-device forward pass
    # costs seconds of torch start-up.
    activations += sum(
        m.out_features for m in net.modules() if isinstance(m, nn.Linear | NoisyLinear)
    )
    return NetworkLayout(
        state_shapes={k: tuple(v.shape) for k, v in net.state_dict().items()},
        param_shapes=tuple(tuple(p.shape) for p in net.parameters()),
        activation_size=activations,
    )


def update_bytes(layout: NetworkLayout, spec: EnvSpec, config: DQNConfig) -> int:
    """Bytes one round of updates holds beyond the networks: sampled batches and activations.

    A batch row holds obs and next_obs as stored and as network input, plus action, reward,
    termination, discount, weight and index. The numpy engine samples a whole round's batches at
    once (`gradient_steps` per `train_interval` steps crossed by `num_envs` new steps) and runs
    the target network over them in chunks of at most MAX_TARGET_ROWS rows.
    """
    c = config
    encoder = ObsEncoder(spec)
    obs_shape, obs_dtype = encoder.storage()
    stored = math.prod(obs_shape) * np.dtype(obs_dtype).itemsize
    per_row = 2 * stored + 2 * FLOAT_BYTES * encoder.input_dim + 32
    rows = c.batch_size
    target_rows = 0
    numpy_engine = c.engine != "torch" and not numpy_mlp.unsupported(c, pick_network(c, spec))
    if numpy_engine and not c.prioritized:
        rows *= math.ceil(c.num_envs / c.train_interval) * c.gradient_steps
        target_rows = min(rows, numpy_mlp.MAX_TARGET_ROWS)
    activations = (ACTIVATION_COPIES * c.batch_size + target_rows) * layout.activation_size
    return rows * per_row + FLOAT_BYTES * activations


def check_network_fits(layout: NetworkLayout, advice: str = "lower hidden_sizes") -> None:
    """Raise TrainingError unless the network's training copies fit in available memory."""
    check_fits(
        layout.network_bytes,
        f"a network of {layout.num_params:,} parameters (online and target copies, gradient, "
        "Adam moments)",
        advice,
    )


class DQNLearner:
    """A DQN learner for one env spec.

    Its randomness comes from the config's seed through its own generators: `rng` (numpy:
    exploration and replay sampling) and `torch_rng` (torch, CPU: the noisy layers' noise). It
    never draws from or reseeds torch's global generator.

    Args:
        spec: the env's spaces (see `qlearn.envs.env_spec`).
        config: every hyperparameter.
    """

    def __init__(self, spec: EnvSpec, config: DQNConfig) -> None:
        self.spec = spec
        self.config = config
        # Before anything is allocated: a network too big for the machine is refused here, with
        # both numbers, instead of failing in the allocator (the update's batch is checked when
        # the replay buffer is made, as an agent that only acts never samples one).
        self.layout = network_layout(spec, config)
        check_network_fits(self.layout)
        self.encoder = ObsEncoder(spec)
        self.device = torch.device(config.device)
        self.rng = np.random.default_rng(config.seed)
        self.num_actions = spec.num_actions

        dist = config.distributional
        self.num_atoms = config.num_atoms if dist != "none" else 1
        torso = pick_network(config, spec)
        # torch's layers initialise from the global generator: seed a private copy of it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            q_net = _build_q_network(spec, config)
            # The noise continues the stream the initial weights came from; a generator seeded
            # afresh would redraw the very numbers the weights were made of.
            self.torch_rng = torch.Generator()
            self.torch_rng.set_state(torch.get_rng_state())
        self.q_net = q_net.to(self.device)
        self.target_net = copy.deepcopy(self.q_net)
        self.target_net.requires_grad_(False)
        # The fused kernel does Adam's update in one pass per tensor: ~2x faster on small nets.
        self.optimizer = torch.optim.Adam(
            self.q_net.parameters(), lr=config.learning_rate, eps=config.adam_eps, fused=True
        )
        self.support = torch.linspace(
            config.v_min, config.v_max, self.num_atoms, device=self.device
        )
        self.taus = (torch.arange(self.num_atoms, device=self.device) + 0.5) / self.num_atoms

        self._replay: ReplayMemory | None = None

        self.num_updates = 0
        self._rows: torch.Tensor | None = None  # made at the first update
        self.engine = self._make_engine(torso)
        # After the engine: it rebinds the parameters to its flat arrays.
        self._params = list(self.q_net.parameters())
        self._target_params = list(self.target_net.parameters())
        self._fast_act = self._numpy_policy()

    # ------------------------------------------------------------------ construction
    def _make_engine(self, torso: str) -> NumpyMLPEngine | None:
        """The numpy update engine where `config.engine` asks for it or `auto` finds it applies."""
        c = self.config
        if c.engine == "torch":
            return None
        reasons = numpy_mlp.unsupported(c, torso)
        if reasons:
            if c.engine == "numpy":
                raise ConfigError(
                    f"engine = 'numpy' runs plain MLP networks on the CPU only; this config has "
                    f"{', '.join(reasons)}; allowed: engine = 'torch' or 'auto'"
                )
            return None
        return NumpyMLPEngine(self.q_net, self.target_net, self.optimizer, c, self.encoder)

    @property
    def replay(self) -> ReplayMemory:
        """The replay memory (`make_replay`), allocated on first use: an agent loaded only to
        act or evaluate never pays for (or is refused) a buffer sized for training."""
        if self._replay is None:
            check_fits(
                update_bytes(self.layout, self.spec, self.config),
                f"one update (batch_size = {self.config.batch_size}: sampled transitions and "
                "activations)",
                "lower batch_size or hidden_sizes",
            )
            self._replay = make_replay(self.config, self.spec)
        return self._replay

    def _numpy_policy(self) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Views of a plain MLP's weights as numpy arrays, for a fast greedy forward pass.

        The views share memory with the torch parameters, which the optimizer updates in place,
        so they never go stale. Only plain MLP heads on the CPU qualify.
        """
        c = self.config
        if (
            self.device.type != "cpu"
            or c.noisy
            or c.dueling
            or self.num_atoms != 1
            or pick_network(c, self.spec) != "mlp"
        ):
            return None
        linears = [m for m in self.q_net.modules() if isinstance(m, nn.Linear)]
        return [(m.weight.detach().numpy().T, m.bias.detach().numpy()) for m in linears]

    # ------------------------------------------------------------------ acting
    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Greedy Q-values of a batch of raw observations, as numpy (batch, num_actions)."""
        x = self.encoder(obs)
        layers = self._fast_act
        if layers is not None:
            for w, b in layers[:-1]:
                x = np.maximum(x @ w + b, 0.0)
            w, b = layers[-1]
            return x @ w + b
        with torch.inference_mode():
            out = self.q_net(torch.as_tensor(x, device=self.device))
            return self._to_q(out).cpu().numpy()

    def _to_q(self, out: torch.Tensor) -> torch.Tensor:
        """(batch, actions[, atoms]) network output -> (batch, actions) Q-values."""
        return expected_q(out, self.config.distributional, self.support)

    def act(self, obs: np.ndarray, epsilon: float) -> np.ndarray:
        """Training actions for a batch of observations.

        With probability `epsilon` a uniform random action, else the variant's own choice:
        greedy under fresh noise (noisy nets: new noise at every call, as in Rainbow and
        Dopamine), a softmax sample, or greedy.

        Args:
            obs: (num_envs, *obs_shape) raw observations.
            epsilon: probability of a uniform random action (`qlearn.schedules.epsilon`).

        Returns:
            (num_envs,) int64 actions.
        """
        n = len(obs)
        rng = self.rng
        if n == 1:
            # One env: skip the forward pass entirely on exploratory steps.
            if rng.random() < epsilon:
                return np.array([rng.integers(self.num_actions)])
            return self._policy(obs)
        if epsilon >= 1:
            return rng.integers(self.num_actions, size=n)
        actions = self._policy(obs)
        if epsilon <= 0:
            return actions
        explore = rng.random(n) < epsilon
        return np.where(explore, rng.integers(self.num_actions, size=n), actions)

    def _policy(self, obs: np.ndarray) -> np.ndarray:
        """The variant's own training action for each of the (num_envs, ...) observations."""
        c = self.config
        if c.noisy:
            self.q_net.reset_noise(self.torch_rng)
        elif c.exploration == "softmax":
            return np.asarray(softmax_action(self.q_values(obs), c.temperature, self.rng))
        return self.q_values(obs).argmax(axis=1)

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions for a batch of raw observations (noise off)."""
        was_training = self.q_net.training
        self.q_net.eval()
        try:
            return self.q_values(obs).argmax(axis=1)
        finally:
            self.q_net.train(was_training)

    # ------------------------------------------------------------------ learning
    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        return tensor if self.device.type == "cpu" else tensor.to(self.device, non_blocking=True)

    def update(self, num_updates: int = 1, beta: float = 1.0) -> dict[str, float]:
        """`num_updates` gradient steps under the current target network.

        Args:
            num_updates: gradient steps, each on a freshly sampled mini-batch.
            beta: importance-weight exponent for prioritized replay.

        Returns:
            {"loss": ..., "q_mean": ...} of the last update applied; empty when none was (each
            skipped for a non-finite loss under `on_nonfinite = "skip"`).
        """
        if self.engine is None:
            metrics: dict[str, float] = {}
            for _ in range(num_updates):
                metrics = self._update_one(beta) or metrics
            return metrics
        applied, loss, q_mean = self.engine.train(
            self.replay,
            num_updates,
            self.rng,
            beta,
            lambda loss, done: self._nonfinite(loss, self.num_updates + done),
        )
        self.num_updates += applied
        return {"loss": loss, "q_mean": q_mean} if applied else {}

    def _update_one(self, beta: float) -> dict[str, float]:
        """One gradient step of the torch engine on a sampled mini-batch.

        Args:
            beta: importance-weight exponent for prioritized replay.

        Returns:
            {"loss": ..., "q_mean": ...}; empty when the update was skipped for a non-finite loss
            under `on_nonfinite = "skip"`.
        """
        c = self.config
        batch = self.replay.sample(c.batch_size, self.rng, beta=beta)
        if c.noisy:
            self.q_net.reset_noise(self.torch_rng)
            self.target_net.reset_noise(self.torch_rng)
        loss_per_sample, q_taken, priority = self._loss(batch)
        if c.prioritized:
            loss = (loss_per_sample * self._tensor(batch.weights)).mean()
        else:
            loss = loss_per_sample.mean()  # uniform weights: skip the multiply
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            return self._nonfinite(loss_value)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        metrics = {"loss": loss_value, "q_mean": q_taken.mean().item()}
        if c.log_grad_norms:
            metrics.update((f"grad_norm/{k}", v) for k, v in layer_grad_norms(self.q_net).items())
        if c.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self._params, c.max_grad_norm, foreach=True)
        self.optimizer.step()
        self.num_updates += 1
        if c.prioritized:
            self.replay.update_priorities(batch.indices, priority.cpu().numpy())
        return metrics

    def _nonfinite(self, loss: float, update: int | None = None) -> dict[str, float]:
        update = self.num_updates if update is None else update
        message = (
            f"non-finite loss ({loss}) at update {update}; lower learning_rate, "
            "check rewards for NaN/inf, or set on_nonfinite='skip'"
        )
        if self.config.on_nonfinite == "error":
            raise TrainingError(message)
        warnings.warn(f"skipped an update: {message}", RuntimeWarning, stacklevel=2)
        return {}

    def _loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample loss, Q-values of the taken actions, and the new priorities; each (batch,).

        The priority is |TD error| for scalar heads and the per-sample loss for distributional
        ones (as in Rainbow, where the cross-entropy stands in for the TD error).
        """
        c = self.config
        obs = self._tensor(self.encoder(batch.obs))
        next_obs = self._tensor(self.encoder(batch.next_obs))
        actions = self._tensor(batch.actions)
        returns = self._tensor(batch.returns)
        terminated = self._tensor(batch.terminated)
        discounts = self._tensor(batch.discounts)
        rows = self._rows
        if rows is None:
            rows = self._rows = torch.arange(c.batch_size, device=self.device)
        if len(actions) != len(rows):
            rows = torch.arange(len(actions), device=self.device)

        if c.distributional == "none":
            if c.double_q:
                # One pass over obs and next_obs together: half the forward calls.
                both = self.q_net(torch.cat([obs, next_obs]))
                out, next_online = both[: len(actions)], both[len(actions) :].detach()
            else:
                out = self.q_net(obs)
            q_taken = out[rows, actions]  # (batch,)
            with torch.no_grad():
                next_target = self.target_net(next_obs)  # (batch, num_actions)
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

        out = self.q_net(obs)
        with torch.no_grad():
            next_out = self.target_net(next_obs)  # (batch, num_actions, num_atoms)
            chooser = self.q_net(next_obs) if c.double_q else next_out
            next_actions = self._to_q(chooser).argmax(1)
            next_dist = next_out[rows, next_actions]  # (batch, num_atoms)
        taken = out[rows, actions]  # (batch, num_atoms)
        if c.distributional == "c51":
            with torch.no_grad():
                target_probs = targets.c51_project(
                    next_dist.softmax(-1), returns, discounts, terminated, self.support
                )
            per_sample = targets.c51_loss(taken, target_probs)
            q_taken = (taken.detach().softmax(-1) * self.support).sum(-1)
        else:
            target_q = returns[:, None] + (discounts * (1 - terminated))[:, None] * next_dist
            per_sample = targets.quantile_huber_loss(taken, target_q)
            q_taken = taken.detach().mean(-1)
        return per_sample, q_taken, per_sample.detach()

    def sync_target(self) -> None:
        """Copy the main network into the target (tau = 1) or move it by Polyak averaging."""
        if self.engine is not None:
            self.engine.sync_target(self.config.tau)
            return
        with torch.no_grad():
            if self.config.tau >= 1.0:
                torch._foreach_copy_(self._target_params, self._params)
            else:
                torch._foreach_lerp_(self._target_params, self._params, self.config.tau)

    # ------------------------------------------------------------------ state
    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the learner's state: both networks, the Adam moments and the state of
        `torch_rng`."""
        out: dict[str, torch.Tensor] = {}
        for k, v in self.q_net.state_dict().items():
            out[f"q_net.{k}"] = v
        for k, v in self.target_net.state_dict().items():
            out[f"target_net.{k}"] = v
        opt = self.optimizer.state_dict()
        for i, state in opt["state"].items():
            for name, value in state.items():
                tensor = value if torch.is_tensor(value) else torch.tensor(value)
                out[f"optim.{i}.{name}"] = tensor
        out["torch_rng"] = self.torch_rng.get_state()
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what `tensors()` produced; raises KeyError/RuntimeError on a mismatch."""
        self.q_net.load_state_dict(
            {k[len("q_net.") :]: v for k, v in tensors.items() if k.startswith("q_net.")}
        )
        self.target_net.load_state_dict(
            {k[len("target_net.") :]: v for k, v in tensors.items() if k.startswith("target_net.")}
        )
        opt = self.optimizer.state_dict()
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, i, name = key.split(".", 2)
                state.setdefault(int(i), {})[name] = value
        opt["state"] = state
        self.optimizer.load_state_dict(opt)
        if self.engine is not None:
            self.engine.bind_optimizer_state()
        if "torch_rng" in tensors:
            # Checkpoints before the agent had its own generator saved torch's global CPU one
            # under this key: the same state format, so they restore into `torch_rng`.
            self.torch_rng.set_state(tensors["torch_rng"])
        self._fast_act = self._numpy_policy()

    def rng_state(self) -> dict[str, Any]:
        """The state of `rng` (exploration and replay sampling), as JSON-ready data.

        `torch_rng`'s state is a tensor and travels with `tensors()`.
        """
        return {"numpy_rng": self.rng.bit_generator.state}

    def load_rng_state(self, data: dict[str, Any]) -> None:
        """Restore what `rng_state()` returned."""
        self.rng.bit_generator.state = data["numpy_rng"]


def expected_q(out: torch.Tensor, distributional: str, support: torch.Tensor) -> torch.Tensor:
    """Q-values from a network's output: the mean of its return distribution.

    Args:
        out: (batch, actions) Q-values, or (batch, actions, atoms) C51 logits or QR quantiles.
        distributional: `none`, `c51` or `qr`.
        support: (atoms,) C51 atom values; unused otherwise.

    Returns:
        (batch, actions): `out` itself, sum_i softmax(out)_i z_i for C51, the mean quantile for QR.
    """
    if distributional == "c51":
        return (out.softmax(-1) * support).sum(-1)
    if distributional == "qr":
        return out.mean(-1)
    return out
