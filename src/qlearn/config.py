"""Frozen, validated configs, built from Python, dicts, TOML files and `key=value` strings.

Every config is a frozen dataclass whose `__post_init__` checks each value, so an invalid config
cannot exist. `from_dict` refuses unknown keys (with a suggestion) and coerces values to the field
types, which is what TOML files and `--set key=value` overrides go through.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Self, get_args, get_origin

import tomli_w

from qlearn.errors import ConfigError

InitScheme = Literal[
    "xavier_normal", "xavier_uniform", "lecun_normal", "kaiming", "orthogonal", "torch_default"
]
Exploration = Literal["epsilon_greedy", "softmax"]
EpsilonDecay = Literal["linear", "exponential"]
Loss = Literal["huber", "mse"]
Distributional = Literal["none", "c51", "qr"]
Network = Literal["auto", "mlp", "minatar_cnn", "nature_cnn"]
NonFinite = Literal["error", "skip"]
Engine = Literal["auto", "numpy", "torch"]

MAX_SEED = 2**63 - 1  # torch.manual_seed and TOML integers stop at 64 bits
MAX_TORCH_THREADS = 1024  # torch crashes (SIGSEGV) when asked for absurd thread counts
MAX_NUM_ENVS = 4096
"""Most env copies one run steps. They all live in this process and are stepped one after another
(Gymnasium's SyncVectorEnv, or CartPole's numpy vector env), so more copies add no parallelism:
they only batch the forward pass, which stops paying off long before a few thousand rows. Each
copy is a full env object (an Atari emulator holds megabytes), so the cap also stops a typo such as
`num_envs=1000000` from building a million envs until memory runs out."""


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ConfigError unless `low <= value <= high` (or `<` where the bound is open)."""
    ok = not (isinstance(value, float) and not math.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ConfigError(f"{name} = {value!r} is out of range; allowed: {left}{lo}, {hi}{right}")


def check_num_envs(num_envs: int, total_steps: int) -> None:
    """Raise ConfigError unless 1 <= num_envs <= min(total_steps, MAX_NUM_ENVS).

    Each round of training steps every env once, so envs beyond the step budget would run it
    over (a million envs for 200 steps took a million steps).
    """
    limit = min(total_steps, MAX_NUM_ENVS)
    if isinstance(num_envs, int) and 1 <= num_envs <= limit:
        return
    if total_steps < MAX_NUM_ENVS:
        why = (
            f"total_steps = {total_steps}: each round steps every env, so more envs than steps "
            "overrun the step budget"
        )
    else:
        why = f"MAX_NUM_ENVS = {MAX_NUM_ENVS}, the most env copies one process steps"
    raise ConfigError(
        f"num_envs = {num_envs!r} is out of range; allowed: [1, {limit}] (at most {why})"
    )


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) is tuple:
        return "a list of integers, e.g. [64, 64] or 64,64"
    if get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    names[type(None)] = "none"
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def coerce(name: str, value: Any, tp: Any) -> Any:
    """Convert `value` to the field type `tp`, or raise ConfigError naming the key and the type."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(name, value, arg)
            except ConfigError:
                continue
    elif origin is Literal:
        if value in get_args(tp):
            return value
    elif origin is tuple:
        items = value
        if isinstance(value, str):
            # A TOML list arrives parsed; a string here is either a bare comma list (`64,64`) or
            # text that failed to parse as TOML, such as an unclosed `[64, 64`: refuse brackets
            # and empty items rather than guess.
            parts = [v.strip() for v in value.split(",")]
            items = None if "[" in value or "]" in value or "" in parts else parts
        if isinstance(items, list | tuple):
            try:
                return tuple(coerce(name, item, get_args(tp)[0]) for item in items)
            except ConfigError:
                pass
    elif tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"{name} = {value!r} is invalid; allowed: {_type_name(tp)}")


def parse_override(text: str) -> tuple[str, Any]:
    """Split a `key=value` string; the value is read as a TOML value, else kept as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} is malformed; expected key=value, e.g. gamma=0.99")
    raw = raw.strip()
    try:
        parsed = tomllib.loads(f"v = {raw}")
    except ValueError:  # TOMLDecodeError, or an integer too long to convert
        parsed = {}
    # More than one key means the value held a newline and more TOML after it; kept as a
    # string, it fails the field's type check instead of setting keys nobody asked for.
    value = parsed["v"] if list(parsed) == ["v"] else raw
    return key, value


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's table, or ConfigError naming the file and the problem."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a directory") from None
    except OSError as exc:
        raise ConfigError(
            f"config file {str(path)!r} cannot be read ({exc.strerror or exc})"
        ) from None
    except ValueError as exc:  # TOMLDecodeError, UnicodeDecodeError, an over-long integer
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """Shared construction and serialisation for every config."""

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        return _field_types(cls)

    def _check_choices(self) -> None:
        """Refuse a value outside its Literal field's choices (constructed from Python, where
        `from_dict`'s coercion does not run)."""
        for name, tp in self.field_types().items():
            value = getattr(self, name)
            if get_origin(tp) is Literal and value not in get_args(tp):
                raise ConfigError(f"{name} = {value!r} is invalid; allowed: {_type_name(tp)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> Self:
        """Build from a mapping, refusing unknown keys and coercing values to the field types."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{source} must be a table of key = value pairs, not {type(data).__name__}"
            )
        types_ = cls.field_types()
        kwargs = {}
        for key, value in data.items():
            if not isinstance(key, str) or key not in types_:
                close = difflib.get_close_matches(str(key), types_, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown key {key!r} in {source}{hint}")
            kwargs[key] = coerce(key, value, types_[key])
        try:
            return cls(**kwargs)
        except TypeError as exc:  # pragma: no cover - guarded by the key check above
            raise ConfigError(f"invalid {source}: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path, base: Self | None = None) -> Self:
        """Build from a TOML file; keys it leaves out come from `base` (else the defaults)."""
        data = read_toml(path)
        start = base.to_dict() if base is not None else {}
        return cls.from_dict({**start, **data}, source=f"config file {str(path)!r}")

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_toml(self) -> str:
        # TOML has no null: a None-valued field is left out when None is its default, and
        # written as the string "none" (which `coerce` reads back as None) when it is not.
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return tomli_w.dumps(
            {
                k: "none" if v is None else v
                for k, v in self.to_dict().items()
                if v is not None or defaults[k] is not None
            }
        )

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed, going through the same checks as `from_dict`."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def with_overrides(self, overrides: Iterable[str]) -> Self:
        """Apply `key=value` strings, as given to the CLI's `--set`."""
        changes = dict(parse_override(text) for text in overrides)
        types_ = self.field_types()
        for key in changes:
            if key not in types_:
                close = difflib.get_close_matches(key, types_, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown key {key!r} in --set{hint}")
        return self.replace(**changes)


@dataclasses.dataclass(frozen=True)
class TabularConfig(ConfigBase):
    """Tabular Q-learning on an env with Discrete observation and action spaces."""

    num_episodes: int = 10_000
    """Training episodes."""
    alpha: float = 0.1
    """Learning rate of the Bellman update, in (0, 1]."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    exploration: Exploration = "epsilon_greedy"
    """`epsilon_greedy` or `softmax` (Boltzmann over Q / temperature)."""
    epsilon_start: float = 1.0
    """Epsilon at the first episode, in [0, 1]."""
    epsilon_end: float = 0.01
    """The floor epsilon decays to, in [0, epsilon_start]."""
    epsilon_decay: EpsilonDecay = "linear"
    """`linear`: reaches the floor after `decay_fraction` of the episodes; `exponential`:
    multiplied by `epsilon_decay_rate` after each episode."""
    decay_fraction: float = 0.5
    """Fraction of the episodes over which a linear schedule decays, in (0, 1]."""
    epsilon_decay_rate: float = 0.999
    """Per-episode factor of the exponential schedule, in (0, 1]."""
    temperature: float = 1.0
    """Softmax temperature, > 0. Lower is greedier."""
    max_episode_steps: int | None = None
    """Cap on an episode's length (truncation); None keeps the env's own limit."""
    seed: int = 0
    """Seed of the env and of the exploration RNG."""

    def __post_init__(self) -> None:
        self._check_choices()
        check_range("num_episodes", self.num_episodes, 1)
        check_range("alpha", self.alpha, 0, 1, low_open=True)
        check_range("gamma", self.gamma, 0, 1)
        check_range("epsilon_start", self.epsilon_start, 0, 1)
        check_range("epsilon_end", self.epsilon_end, 0, self.epsilon_start)
        check_range("decay_fraction", self.decay_fraction, 0, 1, low_open=True)
        check_range("epsilon_decay_rate", self.epsilon_decay_rate, 0, 1, low_open=True)
        check_range("temperature", self.temperature, 0, None, low_open=True)
        if self.max_episode_steps is not None:
            check_range("max_episode_steps", self.max_episode_steps, 1)
        check_range("seed", self.seed, 0)


@dataclasses.dataclass(frozen=True)
class DQNConfig(ConfigBase):
    """Every DQN hyperparameter; variants (Double, Dueling, PER, n-step, noisy, C51) are flags."""

    total_steps: int = 100_000
    """The run's planned env steps: `learn()` trains until this step count, and the epsilon and
    PER-beta schedules are defined over it, however training is split into `learn(n)` calls."""
    # --- network
    network: Network = "auto"
    """`mlp` for flat observations, `minatar_cnn` / `nature_cnn` for images; `auto` picks."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the MLP (and of the head after a CNN)."""
    init: InitScheme = "xavier_normal"
    """Weight initialisation; biases always start at zero."""
    dueling: bool = False
    """Dueling head: Q = V + A - mean(A)."""
    noisy: bool = False
    """Factorised Gaussian noisy linear layers in the head; replaces epsilon-greedy."""
    noisy_sigma: float = 0.5
    """Initial sigma of the noisy layers (scaled by 1/sqrt(fan_in))."""
    distributional: Distributional = "none"
    """`c51` (categorical) or `qr` (quantile regression) return distributions."""
    num_atoms: int = 51
    """Atoms of the C51 support, or quantiles of QR-DQN."""
    v_min: float = -10.0
    """Lowest atom of the C51 support."""
    v_max: float = 10.0
    """Highest atom of the C51 support."""
    # --- learning
    learning_rate: float = 5e-4
    """Adam step size."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    clip_rewards: bool = False
    """Clip the rewards the learner trains on to [-1, 1], as Nature DQN and Dopamine do on Atari;
    the episode returns logged and evaluated stay unclipped."""
    loss: Loss = "huber"
    """TD loss: `huber` (smooth L1) or `mse`."""
    max_grad_norm: float | None = 10.0
    """Clip the global gradient norm to this; None disables clipping."""
    double_q: bool = False
    """Double DQN: the main network picks the next action, the target network scores it."""
    n_step: int = 1
    """Steps of the bootstrapped return."""
    # --- replay
    buffer_size: int = 100_000
    """Transitions kept in the replay buffer."""
    batch_size: int = 64
    """Transitions per gradient step; at most `buffer_size`."""
    learning_starts: int = 1_000
    """Env steps before the first update."""
    train_interval: int = 4
    """Env steps between updates."""
    gradient_steps: int = 1
    """Gradient steps per update."""
    prioritized: bool = False
    """Proportional prioritized replay."""
    per_alpha: float = 0.6
    """Priority exponent, in [0, 1]."""
    per_beta_start: float = 0.4
    """Importance-weight exponent at the start; annealed to 1 over training."""
    per_eps: float = 1e-6
    """Added to |TD error| so no priority is zero."""
    # --- target network
    target_update_interval: int = 500
    """Env steps between target updates."""
    tau: float = 1.0
    """1.0 copies the main network; smaller values move it by Polyak averaging."""
    # --- exploration
    exploration: Exploration = "epsilon_greedy"
    """`epsilon_greedy` or `softmax` (Boltzmann)."""
    epsilon_start: float = 1.0
    """Epsilon at step 0."""
    epsilon_end: float = 0.05
    """Epsilon after the decay, in [0, epsilon_start]."""
    exploration_fraction: float = 0.1
    """Fraction of total_steps over which epsilon decays linearly, in (0, 1]."""
    temperature: float = 1.0
    """Softmax temperature, > 0."""
    # --- envs
    num_envs: int = 1
    """Envs stepped together through a Gymnasium vector env; at most `total_steps` and
    `MAX_NUM_ENVS` (4096)."""
    frame_stack: int = 4
    """Frames stacked for Atari observations."""
    seed: int = 0
    """Seeds envs, network init, replay sampling and exploration."""
    torch_threads: int = 1
    """Threads of torch and of numpy's BLAS during training; 1 is fastest for small networks."""
    device: str = "cpu"
    """Torch device for the networks."""
    engine: Engine = "auto"
    """Update engine: `numpy` runs plain-MLP updates on the CPU (~3x faster at CartPole sizes),
    `torch` runs every network; `auto` picks numpy wherever it applies."""
    # --- evaluation, logging, checkpoints
    eval_interval: int = 10_000
    """Env steps between greedy evaluations on a separate env; 0 disables."""
    eval_episodes: int = 10
    """Episodes per periodic evaluation."""
    checkpoint_interval: int = 10_000
    """Env steps between periodic checkpoints (with the replay buffer: what `--resume` continues
    from after a crash); 0 disables this trigger. They fall at its multiples unless
    `checkpoint_max_overhead` delays them. A run keeps its two newest."""
    checkpoint_minutes: float = 5.0
    """Minutes of wall-clock time after which a periodic checkpoint falls due whatever the step
    count (checked every 1,000 steps); 0 disables this trigger. With both triggers a crash loses
    at most this much time or `checkpoint_interval` steps of training, whichever is less, unless
    `checkpoint_max_overhead` delays a checkpoint. With both at 0 only an interrupted (SIGINT,
    SIGTERM) or finished run leaves a checkpoint."""
    checkpoint_max_overhead: float | None = 0.02
    """Cap on the share of time spent writing periodic checkpoints, in (0, 1]; None removes it.
    A due checkpoint waits (checked every 1,000 steps) until the time since the last one began
    is at least that one's cost divided by this share. Small replays are never held back
    (CartPole's 50,000 transitions, ~2 MB, take milliseconds), while a checkpoint of Atari's 1M
    transitions (~7 GB, tens of seconds to write and hash; 30 s, say) is followed by the next no
    sooner than 25 minutes later instead of after 10,000 steps. Only which checkpoints get
    written depends on the machine's speed; what is learned never does."""
    tensorboard: bool = False
    """Also write TensorBoard event files."""
    log_grad_norms: bool = False
    """Log the gradient norm of each layer (initialisation diagnostics)."""
    on_nonfinite: NonFinite = "error"
    """A NaN or inf loss: `error` stops the run, `skip` drops the update with a warning."""

    def __post_init__(self) -> None:
        self._check_choices()
        check_range("total_steps", self.total_steps, 1)
        if not self.hidden_sizes:
            raise ConfigError("hidden_sizes = [] is invalid; allowed: at least one width >= 1")
        for width in self.hidden_sizes:
            check_range("hidden_sizes entry", width, 1)
        check_range("noisy_sigma", self.noisy_sigma, 0)
        check_range("num_atoms", self.num_atoms, 2)
        check_range("v_min", self.v_min)
        check_range("v_max", self.v_max)
        if self.v_max <= self.v_min:
            raise ConfigError(f"v_max = {self.v_max!r} must be greater than v_min = {self.v_min!r}")
        check_range("learning_rate", self.learning_rate, 0, None, low_open=True)
        check_range("adam_eps", self.adam_eps, 0, None, low_open=True)
        check_range("gamma", self.gamma, 0, 1)
        if self.max_grad_norm is not None:
            check_range("max_grad_norm", self.max_grad_norm, 0, None, low_open=True)
        check_range("n_step", self.n_step, 1, 255)
        check_range("buffer_size", self.buffer_size, 1)
        check_range("batch_size", self.batch_size, 1)
        if self.batch_size > self.buffer_size:
            raise ConfigError(
                f"batch_size = {self.batch_size} is larger than buffer_size = {self.buffer_size}; "
                "allowed: at most buffer_size (a batch samples what the buffer holds)"
            )
        check_range("learning_starts", self.learning_starts, 0)
        check_range("train_interval", self.train_interval, 1)
        check_range("gradient_steps", self.gradient_steps, 1)
        check_range("per_alpha", self.per_alpha, 0, 1)
        check_range("per_beta_start", self.per_beta_start, 0, 1)
        check_range("per_eps", self.per_eps, 0, None, low_open=True)
        check_range("target_update_interval", self.target_update_interval, 1)
        check_range("tau", self.tau, 0, 1, low_open=True)
        check_range("epsilon_start", self.epsilon_start, 0, 1)
        check_range("epsilon_end", self.epsilon_end, 0, self.epsilon_start)
        check_range("exploration_fraction", self.exploration_fraction, 0, 1, low_open=True)
        check_range("temperature", self.temperature, 0, None, low_open=True)
        check_num_envs(self.num_envs, self.total_steps)
        check_range("frame_stack", self.frame_stack, 1)
        check_range("seed", self.seed, 0, MAX_SEED)
        check_range("torch_threads", self.torch_threads, 1, MAX_TORCH_THREADS)
        check_range("eval_interval", self.eval_interval, 0)
        check_range("eval_episodes", self.eval_episodes, 1)
        check_range("checkpoint_interval", self.checkpoint_interval, 0)
        check_range("checkpoint_minutes", self.checkpoint_minutes, 0)
        if self.checkpoint_max_overhead is not None:
            check_range(
                "checkpoint_max_overhead", self.checkpoint_max_overhead, 0, 1, low_open=True
            )
        if not self.device:
            raise ConfigError("device = '' is invalid; allowed: a torch device such as 'cpu'")
