"""Frozen, validated configs, built from Python, dicts, TOML files and `key=value` strings.

Every config is a frozen dataclass whose `__post_init__` checks each value, so an invalid config
cannot exist. A field declares what it allows once, in its type: `Annotated[float, Range(0, 1)]`
for a number, a `Literal` for choices, `RUN` for a run setting (how the run is carried out, not
what is learned). One generic check reads that metadata; the few constraints between fields are
named methods of each config. `describe_settings` turns the same metadata into the rows of the
settings table that the docs site and `qlearn settings` show.

`from_dict` refuses unknown keys (with a suggestion) and coerces values to the field types, which
is what TOML files and `--set key=value` overrides go through.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import itertools
import math
import textwrap
import tomllib
import types
import typing
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, get_args, get_origin

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

STUDY_SCHEMES: tuple[str, ...] = (
    "identity_plus",
    "identity_minus",
    "gaussian_plus",
    "gaussian_minus",
    "xavier",
    "kaiming",
)
"""Weight schemes of the initialisation study (`qlearn.diagnostics`), listed here, without torch,
so that `qlearn --help` can name them."""
DEFAULT_STUDY_SCHEMES: tuple[str, ...] = ("identity_plus", "identity_minus", "xavier", "kaiming")

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


@dataclasses.dataclass(frozen=True)
class Range:
    """The interval a numeric field allows, declared once in its type:
    `gamma: Annotated[float, Range(0, 1)]`.

    None leaves a side unbounded; NaN and infinities are always refused. On a tuple field the
    range applies to each entry. The generic config check, the settings table and the `--set`
    help all read it.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, name: str, value: float) -> None:
        """Raise ConfigError naming `name` and this range unless `value` lies in it."""
        check_range(
            name, value, self.low, self.high, low_open=self.low_open, high_open=self.high_open
        )

    def __str__(self) -> str:
        """For people: `[0, 1]`, `(0, 1]`, `>= 1`, `> 0`, or `finite`."""
        low, high = _bound_text(self.low), _bound_text(self.high)
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{left}{low}, {high}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return "finite"


def _bound_text(bound: float | None) -> str:
    # Integers in full (MAX_SEED is 9223372036854775807, not 9.22337e+18).
    if bound is None or isinstance(bound, int):
        return str(bound)
    return f"{bound:g}"


@dataclasses.dataclass(frozen=True)
class Limit:
    """A bound set by another field, shown in the settings table next to the field's Range.

    The text only documents: the config's `_check_relations` enforces it.
    """

    text: str


@dataclasses.dataclass(frozen=True)
class Group:
    """Which kind of setting a field is; fields without one are algorithm settings."""

    name: str


ALGORITHM = Group("algorithm")
"""What is learned: the update rule, network, replay, exploration and their schedules."""
RUN = Group("run")
"""How the run is carried out (seed, hardware, engine, evaluation, logging, checkpoints)."""


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
    """Each field's type with `Annotated` metadata stripped: what coercion converts to."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


@functools.cache
def _field_metadata(cls: type) -> dict[str, tuple[Any, ...]]:
    """Each field's `Annotated` metadata (Range, Limit, Group), empty where it has none."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {
        f.name: hints[f.name].__metadata__ if get_origin(hints[f.name]) is Annotated else ()
        for f in dataclasses.fields(cls)
    }


def _of_kind(metadata: tuple[Any, ...], kind: type) -> Any:
    return next((m for m in metadata if isinstance(m, kind)), None)


@functools.cache
def _field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, read from its source with `ast`."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    node = tree.body[0]
    body = node.body if isinstance(node, ast.ClassDef) else []
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _short_type(tp: Any) -> str:
    """A field type for the settings table: `float`, `int or none`, `'huber' | 'mse'`."""
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) is tuple:
        return "list of int"
    if get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_short_type(a) for a in get_args(tp))
    return "none" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _toml_value(value: Any) -> str:
    """How a default is written in a TOML file or after `--set key=`."""
    if value is None:
        return "none"
    if isinstance(value, tuple):  # one line, where tomli_w would break the list over several
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value})[len("v = ") :].strip()


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of a config's settings table (see `describe_settings`)."""

    name: str
    type: str
    """`float`, `int or none`, `'huber' | 'mse'`, ..."""
    default: str
    """As written in TOML and after `--set key=`."""
    allowed: str
    """The field's Range and Limit in words (`(0, 1]`, `>= 1, at most buffer_size`); for
    choices, empty (the type lists them)."""
    group: str
    """`algorithm` or `run`."""
    doc: str
    """The field's docstring."""


def describe_settings(cls: type[ConfigBase]) -> list[Setting]:
    """Every field of a config class, in declaration order, as a row of the settings table.

    Built from the same type metadata the checks read, so the table cannot drift from them.
    """
    types_, metadata, docs = cls.field_types(), _field_metadata(cls), _field_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        meta = metadata[f.name]
        allowed = [str(m) for m in meta if isinstance(m, Range)]
        allowed += [m.text for m in meta if isinstance(m, Limit)]
        if get_origin(types_[f.name]) is tuple and allowed:
            allowed[0] = f"each {allowed[0]}"
        rows.append(
            Setting(
                name=f.name,
                type=_short_type(types_[f.name]),
                default=_toml_value(f.default),
                allowed=", ".join(allowed),
                group=(_of_kind(meta, Group) or ALGORITHM).name,
                doc=docs.get(f.name, ""),
            )
        )
    return rows


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """Shared construction and serialisation for every config."""

    RENAMED: ClassVar[Mapping[str, str]] = {}
    """Old key -> new key: old names still read from dicts, TOML files and `--set`."""

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        return _field_types(cls)

    def __post_init__(self) -> None:
        self._check_fields()
        self._check_relations()

    def _check_fields(self) -> None:
        """Each field against its own type metadata: a Literal's choices (constructed from
        Python, `from_dict`'s coercion has not run) and its Range, in declaration order."""
        metadata = _field_metadata(type(self))
        for name, tp in self.field_types().items():
            value = getattr(self, name)
            if get_origin(tp) is Literal and value not in get_args(tp):
                raise ConfigError(f"{name} = {value!r} is invalid; allowed: {_type_name(tp)}")
            bounds = _of_kind(metadata[name], Range)
            if bounds is None or value is None:  # None passed coercion: the field allows it
                continue
            if get_origin(tp) is tuple:
                for entry in value:
                    bounds.check(f"{name} entry", entry)
            else:
                bounds.check(name, value)

    def _check_relations(self) -> None:
        """Constraints between fields, each named; run after every field passed its own."""

    @classmethod
    def _renamed(cls, data: Mapping[str, Any], source: str) -> dict[str, Any]:
        """`data` with old key names (`RENAMED`) replaced by the new ones."""
        out = dict(data)
        for old, new in cls.RENAMED.items():
            if old not in out:
                continue
            if new in out:
                raise ConfigError(
                    f"{source} sets both {old!r} and {new!r}; {old!r} is the old name of {new!r}, "
                    "keep one"
                )
            warnings.warn(
                f"{old!r} in {source} is renamed {new!r}; the old name is read for now",
                DeprecationWarning,
                stacklevel=3,
            )
            out[new] = out.pop(old)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> Self:
        """Build from a mapping, refusing unknown keys and coercing values to the field types."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{source} must be a table of key = value pairs, not {type(data).__name__}"
            )
        types_ = cls.field_types()
        kwargs = {}
        for key, value in cls._renamed(data, source).items():
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
        source = f"config file {str(path)!r}"
        data = cls._renamed(read_toml(path), source)  # before the base's new names join it
        start = base.to_dict() if base is not None else {}
        return cls.from_dict({**start, **data}, source=source)

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
        changes = self._renamed(dict(parse_override(text) for text in overrides), "--set")
        types_ = self.field_types()
        for key in changes:
            if key not in types_:
                close = difflib.get_close_matches(key, types_, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown key {key!r} in --set{hint}")
        return self.replace(**changes)


@dataclasses.dataclass(frozen=True)
class TabularConfig(ConfigBase):
    """Tabular Q-learning on an env with Discrete observation and action spaces.

    `decay_fraction`, this config's old name of `exploration_fraction`, is still read from
    dicts, TOML files (old run dirs) and `--set`, with a DeprecationWarning.
    """

    RENAMED: ClassVar[Mapping[str, str]] = {"decay_fraction": "exploration_fraction"}

    num_episodes: Annotated[int, Range(1)] = 10_000
    """Training episodes."""
    alpha: Annotated[float, Range(0, 1, low_open=True)] = 0.1
    """Learning rate of the Bellman update."""
    gamma: Annotated[float, Range(0, 1)] = 0.99
    """Discount factor."""
    exploration: Exploration = "epsilon_greedy"
    """`epsilon_greedy` or `softmax` (Boltzmann over Q / temperature)."""
    epsilon_start: Annotated[float, Range(0, 1)] = 1.0
    """Epsilon at the first episode."""
    epsilon_end: Annotated[float, Range(0, 1), Limit("at most epsilon_start")] = 0.01
    """The floor epsilon decays to."""
    epsilon_decay: EpsilonDecay = "linear"
    """`linear`: reaches the floor after `exploration_fraction` of the episodes; `exponential`:
    multiplied by `epsilon_decay_rate` after each episode."""
    exploration_fraction: Annotated[float, Range(0, 1, low_open=True)] = 0.5
    """Fraction of the episodes over which a linear schedule decays."""
    epsilon_decay_rate: Annotated[float, Range(0, 1, low_open=True)] = 0.999
    """Per-episode factor of the exponential schedule."""
    temperature: Annotated[float, Range(0, low_open=True)] = 1.0
    """Softmax temperature; lower is greedier."""
    max_episode_steps: Annotated[int | None, Range(1)] = None
    """Cap on an episode's length (truncation); none keeps the env's own limit."""
    seed: Annotated[int, Range(0, MAX_SEED), RUN] = 0
    """Seed of the env and of the exploration RNG."""

    def _check_relations(self) -> None:
        check_range("epsilon_end", self.epsilon_end, 0, self.epsilon_start)


@dataclasses.dataclass(frozen=True)
class DQNConfig(ConfigBase):
    """Every DQN setting; variants (Double, Dueling, PER, n-step, noisy, C51) are flags.

    Algorithm settings decide what is learned; run settings (marked `RUN`: seed, threads,
    device, engine, evaluation, logging, checkpoints) decide how the run is carried out.
    """

    total_steps: Annotated[int, Range(1)] = 100_000
    """The run's planned env steps: `learn()` trains until this step count, and the epsilon and
    PER-beta schedules are defined over it, however training is split into `learn(n)` calls."""
    # --- network
    network: Network = "auto"
    """`mlp` for flat observations, `minatar_cnn` / `nature_cnn` for images; `auto` picks."""
    hidden_sizes: Annotated[tuple[int, ...], Range(1), Limit("at least one")] = (64, 64)
    """Hidden layer widths of the MLP (and of the head after a CNN)."""
    init: InitScheme = "xavier_normal"
    """Weight initialisation; biases always start at zero."""
    dueling: bool = False
    """Dueling head: Q = V + A - mean(A)."""
    noisy: bool = False
    """Factorised Gaussian noisy linear layers in the head; replaces epsilon-greedy."""
    noisy_sigma: Annotated[float, Range(0)] = 0.5
    """Initial sigma of the noisy layers (scaled by 1/sqrt(fan_in))."""
    distributional: Distributional = "none"
    """`c51` (categorical) or `qr` (quantile regression) return distributions."""
    num_atoms: Annotated[int, Range(2)] = 51
    """Atoms of the C51 support, or quantiles of QR-DQN."""
    v_min: Annotated[float, Range()] = -10.0
    """Lowest atom of the C51 support."""
    v_max: Annotated[float, Range(), Limit("greater than v_min")] = 10.0
    """Highest atom of the C51 support."""
    # --- learning
    learning_rate: Annotated[float, Range(0, low_open=True)] = 5e-4
    """Adam step size."""
    adam_eps: Annotated[float, Range(0, low_open=True)] = 1e-8
    """Adam epsilon."""
    gamma: Annotated[float, Range(0, 1)] = 0.99
    """Discount factor."""
    clip_rewards: bool = False
    """Clip the rewards the learner trains on to [-1, 1], as Nature DQN and Dopamine do on Atari;
    the episode returns logged and evaluated stay unclipped."""
    loss: Loss = "huber"
    """TD loss: `huber` (smooth L1) or `mse`."""
    max_grad_norm: Annotated[float | None, Range(0, low_open=True)] = 10.0
    """Clip the global gradient norm to this; none disables clipping."""
    double_q: bool = False
    """Double DQN: the main network picks the next action, the target network scores it."""
    n_step: Annotated[int, Range(1, 255)] = 1
    """Steps of the bootstrapped return."""
    # --- replay
    buffer_size: Annotated[int, Range(1)] = 100_000
    """Transitions kept in the replay buffer."""
    batch_size: Annotated[int, Range(1), Limit("at most buffer_size")] = 64
    """Transitions per gradient step."""
    learning_starts: Annotated[int, Range(0)] = 1_000
    """Env steps before the first update."""
    train_interval: Annotated[int, Range(1)] = 4
    """Env steps between updates."""
    gradient_steps: Annotated[int, Range(1)] = 1
    """Gradient steps per update."""
    prioritized: bool = False
    """Proportional prioritized replay."""
    per_alpha: Annotated[float, Range(0, 1)] = 0.6
    """Priority exponent."""
    per_beta_start: Annotated[float, Range(0, 1)] = 0.4
    """Importance-weight exponent at the start; annealed to 1 over training."""
    per_eps: Annotated[float, Range(0, low_open=True)] = 1e-6
    """Added to |TD error| so no priority is zero."""
    # --- target network
    target_update_interval: Annotated[int, Range(1)] = 500
    """Env steps between target updates."""
    tau: Annotated[float, Range(0, 1, low_open=True)] = 1.0
    """1.0 copies the main network; smaller values move it by Polyak averaging."""
    # --- exploration
    exploration: Exploration = "epsilon_greedy"
    """`epsilon_greedy` or `softmax` (Boltzmann)."""
    epsilon_start: Annotated[float, Range(0, 1)] = 1.0
    """Epsilon at step 0."""
    epsilon_end: Annotated[float, Range(0, 1), Limit("at most epsilon_start")] = 0.05
    """Epsilon after the decay."""
    exploration_fraction: Annotated[float, Range(0, 1, low_open=True)] = 0.1
    """Fraction of total_steps over which epsilon decays linearly."""
    temperature: Annotated[float, Range(0, low_open=True)] = 1.0
    """Softmax temperature; lower is greedier."""
    # --- envs
    num_envs: Annotated[
        int, Range(1), Limit(f"at most total_steps and MAX_NUM_ENVS ({MAX_NUM_ENVS})")
    ] = 1
    """Envs stepped together through a Gymnasium vector env."""
    frame_stack: Annotated[int, Range(1)] = 4
    """Frames stacked for Atari observations."""
    # --- run settings: how the run is carried out, not what is learned
    seed: Annotated[int, Range(0, MAX_SEED), RUN] = 0
    """Seeds envs, network init, replay sampling and exploration."""
    torch_threads: Annotated[int, Range(1, MAX_TORCH_THREADS), RUN] = 1
    """Threads of torch and of numpy's BLAS during training; 1 is fastest for small networks."""
    device: Annotated[str, RUN, Limit("a torch device such as 'cpu'")] = "cpu"
    """Torch device for the networks."""
    engine: Annotated[Engine, RUN] = "auto"
    """Update engine: `numpy` runs plain-MLP updates on the CPU (~3x faster at CartPole sizes),
    `torch` runs every network; `auto` picks numpy wherever it applies."""
    eval_interval: Annotated[int, Range(0), RUN] = 10_000
    """Env steps between greedy evaluations on a separate env; 0 disables."""
    eval_episodes: Annotated[int, Range(1), RUN] = 10
    """Episodes per periodic evaluation."""
    checkpoint_interval: Annotated[int, Range(0), RUN] = 10_000
    """Env steps between periodic checkpoints (with the replay buffer: what `--resume` continues
    from after a crash); 0 disables this trigger. They fall at its multiples unless
    `checkpoint_max_overhead` delays them. A run keeps its two newest."""
    checkpoint_minutes: Annotated[float, Range(0), RUN] = 5.0
    """Minutes of wall-clock time after which a periodic checkpoint falls due whatever the step
    count (checked every 1,000 steps); 0 disables this trigger. With both triggers a crash loses
    at most this much time or `checkpoint_interval` steps of training, whichever is less, unless
    `checkpoint_max_overhead` delays a checkpoint. With both at 0 only an interrupted (SIGINT,
    SIGTERM) or finished run leaves a checkpoint."""
    checkpoint_max_overhead: Annotated[float | None, Range(0, 1, low_open=True), RUN] = 0.02
    """Cap on the share of time spent writing periodic checkpoints; none removes it.
    A due checkpoint waits (checked every 1,000 steps) until the time since the last one began
    is at least that one's cost divided by this share. Small replays are never held back
    (CartPole's 50,000 transitions, ~2 MB, take milliseconds), while a checkpoint of Atari's 1M
    transitions (~7 GB, tens of seconds to write and hash; 30 s, say) is followed by the next no
    sooner than 25 minutes later instead of after 10,000 steps. Only which checkpoints get
    written depends on the machine's speed; what is learned never does."""
    tensorboard: Annotated[bool, RUN] = False
    """Also write TensorBoard event files."""
    log_grad_norms: Annotated[bool, RUN] = False
    """Log the gradient norm of each layer (initialisation diagnostics)."""
    on_nonfinite: Annotated[NonFinite, RUN] = "error"
    """A NaN or inf loss: `error` stops the run, `skip` drops the update with a warning."""

    def _check_relations(self) -> None:
        if not self.hidden_sizes:
            raise ConfigError("hidden_sizes = [] is invalid; allowed: at least one width >= 1")
        if self.v_max <= self.v_min:
            raise ConfigError(f"v_max = {self.v_max!r} must be greater than v_min = {self.v_min!r}")
        if self.batch_size > self.buffer_size:
            raise ConfigError(
                f"batch_size = {self.batch_size} is larger than buffer_size = {self.buffer_size}; "
                "allowed: at most buffer_size (a batch samples what the buffer holds)"
            )
        check_range("epsilon_end", self.epsilon_end, 0, self.epsilon_start)
        check_num_envs(self.num_envs, self.total_steps)
        if not self.device:
            raise ConfigError("device = '' is invalid; allowed: a torch device such as 'cpu'")
