"""The DQN learner: network, replay and update engine, assembled from the parts below.

Every variant is a flag of `DQNConfig` wired into this one class: Double (`double_q`), Dueling
(`dueling`), prioritized replay (`prioritized`), n-step returns (`n_step`), noisy nets (`noisy`)
and distributional heads (`distributional = "c51" | "qr"`). The learner acts, samples replay and
hands the mini-batches to its update engine (`qlearn.agents.engine`), which owns the weights and
the optimizer. The env interaction loop lives in `qlearn.train`; this class only acts on
observations and learns from stored transitions.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from qlearn.agents import numpy_mlp
from qlearn.agents.engine import TorchEngine, UpdateEngine
from qlearn.agents.numpy_mlp import NumpyMLPEngine
from qlearn.config import DQNConfig
from qlearn.envs import EnvSpec, ObsEncoder
from qlearn.errors import ConfigError, TrainingError
from qlearn.exploration import softmax_action
from qlearn.networks import NoisyLinear, QNetwork, conv_output_shapes
from qlearn.replay import ReplayMemory, make_replay
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
    termination, discount, weight and index. Uniform replay samples a whole round's batches at
    once (`gradient_steps` per `train_interval` steps crossed by `num_envs` new steps); the numpy
    engine runs the target network over them in chunks of at most MAX_TARGET_ROWS rows.
    """
    c = config
    encoder = ObsEncoder(spec)
    obs_shape, obs_dtype = encoder.storage()
    stored = math.prod(obs_shape) * np.dtype(obs_dtype).itemsize
    per_row = 2 * stored + 2 * FLOAT_BYTES * encoder.input_dim + 32
    rows = c.batch_size
    target_rows = 0
    numpy_engine = c.engine != "torch" and not numpy_mlp.unsupported(c, pick_network(c, spec))
    if not c.prioritized:
        rows *= math.ceil(c.num_envs / c.train_interval) * c.gradient_steps
        if numpy_engine:
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
    """A DQN learner for one env spec: acts on observations and learns from its replay memory.

    The gradient steps are its `engine`'s (`qlearn.agents.engine.UpdateEngine`): the numpy
    engine for plain MLPs on the CPU unless `config.engine = "torch"`, else the torch engine.
    Its randomness comes from the config's seed through its own generators: `rng` (numpy:
    exploration and replay sampling) and `torch_rng` (torch, CPU: the initial weights' stream,
    continued by the noisy layers' noise). It never draws from or reseeds torch's global
    generator.

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
        self.num_atoms = config.num_atoms if config.distributional != "none" else 1
        # torch's layers initialise from the global generator: seed a private copy of it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            q_net = _build_q_network(spec, config)
            # The noise continues the stream the initial weights came from; a generator seeded
            # afresh would redraw the very numbers the weights were made of.
            self.torch_rng = torch.Generator()
            self.torch_rng.set_state(torch.get_rng_state())
        self.support = torch.linspace(
            config.v_min, config.v_max, self.num_atoms, device=self.device
        )
        self.engine = self._make_engine(q_net)
        self._replay: ReplayMemory | None = None
        self.num_updates = 0

    def _make_engine(self, q_net: QNetwork) -> UpdateEngine:
        """The numpy engine where `config.engine` asks for it or `auto` finds it applies, else
        the torch engine."""
        c = self.config
        if c.engine != "torch":
            reasons = numpy_mlp.unsupported(c, pick_network(c, self.spec))
            if not reasons:
                return NumpyMLPEngine(q_net, c, self.encoder)
            if c.engine == "numpy":
                raise ConfigError(
                    f"engine = 'numpy' runs plain MLP networks on the CPU only; this config has "
                    f"{', '.join(reasons)}; allowed: engine = 'torch' or 'auto'"
                )
        return TorchEngine(q_net, c, self.encoder, self.torch_rng, self.support)

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

    @property
    def q_net(self) -> QNetwork:
        """The online network as a torch module with the current weights (`engine.network()`)."""
        return self.engine.network()

    @property
    def target_net(self) -> QNetwork:
        """The target network as a torch module (`engine.target_network()`)."""
        return self.engine.target_network()

    # ------------------------------------------------------------------ acting
    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Greedy Q-values of a batch of raw observations, as numpy (batch, num_actions)."""
        return self.engine.q_values(self.encoder(obs))

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
            self.engine.network().reset_noise(self.torch_rng)
        elif c.exploration == "softmax":
            return np.asarray(softmax_action(self.q_values(obs), c.temperature, self.rng))
        return self.q_values(obs).argmax(axis=1)

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions for a batch of raw observations (noise off)."""
        net = self.engine.network()
        was_training = net.training
        net.eval()
        try:
            return self.q_values(obs).argmax(axis=1)
        finally:
            net.train(was_training)

    # ------------------------------------------------------------------ learning
    def update(self, num_updates: int = 1, beta: float = 1.0) -> dict[str, float]:
        """`num_updates` gradient steps under the current target network.

        Uniform replay draws the mini-batches of all the steps at once (the same draws as one
        per step) and hands them to the engine together; prioritized replay draws each after the
        previous step's priorities are written back, as its sampling requires.

        Args:
            num_updates: gradient steps, each on a freshly sampled mini-batch.
            beta: importance-weight exponent for prioritized replay.

        Returns:
            {"loss": ..., "q_mean": ...} (and `grad_norm/<layer>` under `log_grad_norms`) of the
            last update applied; empty when none was (each skipped for a non-finite loss under
            `on_nonfinite = "skip"`).
        """
        c = self.config
        if num_updates < 1:
            return {}

        def on_nonfinite(loss: float, applied: int) -> None:
            self._nonfinite(loss, self.num_updates + applied)

        if not c.prioritized:
            batch = self.replay.sample(num_updates * c.batch_size, self.rng)
            result = self.engine.update(batch, num_updates, on_nonfinite)
            self.num_updates += result.num_applied
            return result.metrics()
        metrics: dict[str, float] = {}
        for _ in range(num_updates):
            batch = self.replay.sample(c.batch_size, self.rng, beta=beta)
            result = self.engine.update(batch, 1, on_nonfinite)
            if result.num_applied:
                self.num_updates += 1
                self.replay.update_priorities(batch.indices, cast(np.ndarray, result.priorities))
                metrics = result.metrics()
        return metrics

    def _nonfinite(self, loss: float, update: int) -> None:
        message = (
            f"non-finite loss ({loss}) at update {update}; lower learning_rate, "
            "check rewards for NaN/inf, or set on_nonfinite='skip'"
        )
        if self.config.on_nonfinite == "error":
            raise TrainingError(message)
        warnings.warn(f"skipped an update: {message}", RuntimeWarning, stacklevel=2)

    def sync_target(self) -> None:
        """Copy the main network into the target (tau = 1) or move it by Polyak averaging."""
        self.engine.sync_target(self.config.tau)

    # ------------------------------------------------------------------ state
    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the learner's state: both networks and the Adam state
        (`engine.state_dict()`), and the state of `torch_rng`."""
        out = self.engine.state_dict()
        out["torch_rng"] = self.torch_rng.get_state()
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what `tensors()` produced; raises KeyError/RuntimeError/ValueError on a
        mismatch."""
        self.engine.load_state_dict(tensors)
        if "torch_rng" in tensors:
            # Checkpoints before the agent had its own generator saved torch's global CPU one
            # under this key: the same state format, so they restore into `torch_rng`.
            self.torch_rng.set_state(tensors["torch_rng"])

    def rng_state(self) -> dict[str, Any]:
        """The state of `rng` (exploration and replay sampling), as JSON-ready data.

        `torch_rng`'s state is a tensor and travels with `tensors()`.
        """
        return {"numpy_rng": self.rng.bit_generator.state}

    def load_rng_state(self, data: dict[str, Any]) -> None:
        """Restore what `rng_state()` returned."""
        self.rng.bit_generator.state = data["numpy_rng"]
