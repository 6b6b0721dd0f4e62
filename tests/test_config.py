"""Configs: every invalid value, key, `--set` string or TOML file raises ConfigError naming the
key; every valid config round-trips through dicts, JSON, TOML files and `--set` strings.

The property tests generate inputs with hypothesis; any exception other than ConfigError, or a
key that is accepted but not applied, fails them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import tomli_w
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from qlearn.config import (
    MAX_NUM_ENVS,
    MAX_SEED,
    MAX_TORCH_THREADS,
    ConfigBase,
    DQNConfig,
    Range,
    TabularConfig,
    coerce,
    describe_settings,
    parse_override,
    read_toml,
)
from qlearn.errors import ConfigError

FIELDS = DQNConfig.field_types()
DEFAULT = DQNConfig()
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Allowed ranges: (low, high, low_open, high_open); None is unbounded.
BOUNDS: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "total_steps": (1, None, False, False),
    "noisy_sigma": (0, None, False, False),
    "num_atoms": (2, None, False, False),
    "learning_rate": (0, None, True, False),
    "adam_eps": (0, None, True, False),
    "gamma": (0, 1, False, False),
    "max_grad_norm": (0, None, True, False),
    "n_step": (1, 255, False, False),
    "buffer_size": (1, None, False, False),
    "batch_size": (1, None, False, False),
    "learning_starts": (0, None, False, False),
    "train_interval": (1, None, False, False),
    "gradient_steps": (1, None, False, False),
    "per_alpha": (0, 1, False, False),
    "per_beta_start": (0, 1, False, False),
    "per_eps": (0, None, True, False),
    "target_update_interval": (1, None, False, False),
    "tau": (0, 1, True, False),
    "epsilon_start": (0, 1, False, False),
    "epsilon_end": (0, 1, False, False),
    "exploration_fraction": (0, 1, True, False),
    "temperature": (0, None, True, False),
    "num_envs": (1, MAX_NUM_ENVS, False, False),
    "frame_stack": (1, None, False, False),
    "seed": (0, MAX_SEED, False, False),
    "torch_threads": (1, MAX_TORCH_THREADS, False, False),
    "eval_interval": (0, None, False, False),
    "eval_episodes": (1, None, False, False),
    "checkpoint_interval": (0, None, False, False),
    "checkpoint_minutes": (0, None, False, False),
    "checkpoint_max_overhead": (0, 1, True, False),
    "v_min": (None, None, False, False),
    "v_max": (None, None, False, False),
}
# A value can be refused because of another field: the message then names that one.
RELATED = {
    "epsilon_start": {"epsilon_end"},
    "epsilon_end": {"epsilon_start"},
    "v_min": {"v_max"},
    "v_max": {"v_min"},
    "hidden_sizes": {"hidden_sizes entry"},
    "batch_size": {"buffer_size"},
    "buffer_size": {"batch_size"},
    "num_envs": {"total_steps"},
    "total_steps": {"num_envs"},
}


def _base_type(tp: Any) -> Any:
    if get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in get_args(tp) if a is not type(None))
    return tp


def valid_values(name: str) -> st.SearchStrategy[Any]:
    """Values of field `name` that pass its own checks."""
    tp = FIELDS[name]
    base = _base_type(tp)
    if get_origin(base) is typing.Literal:
        strategy: st.SearchStrategy[Any] = st.sampled_from(get_args(base))
    elif get_origin(base) is tuple:
        strategy = st.lists(st.integers(1, 4096), min_size=1, max_size=4).map(tuple)
    elif base is bool:
        strategy = st.booleans()
    elif base is str:
        strategy = st.text(min_size=1, max_size=12)
    elif base is int:
        low, high, _, _ = BOUNDS[name]
        strategy = st.integers(int(low), int(high) if high is not None else 2**70)
    else:
        low, high, low_open, high_open = BOUNDS[name]
        strategy = st.floats(
            low, high, exclude_min=low_open, exclude_max=high_open, allow_nan=False
        ).filter(math.isfinite)
    return st.one_of(st.none(), strategy) if base is not tp else strategy


@st.composite
def valid_configs(draw: st.DrawFn) -> DQNConfig:
    kwargs = {}
    for name in draw(st.sets(st.sampled_from(sorted(FIELDS)))):
        kwargs[name] = draw(valid_values(name))
    start = kwargs.get("epsilon_start", DEFAULT.epsilon_start)
    end = kwargs.get("epsilon_end", DEFAULT.epsilon_end)
    if end > start:
        kwargs["epsilon_start"], kwargs["epsilon_end"] = end, start
    low, high = kwargs.get("v_min", DEFAULT.v_min), kwargs.get("v_max", DEFAULT.v_max)
    assume(low != high)
    kwargs["v_min"], kwargs["v_max"] = min(low, high), max(low, high)
    # Pairs bounded by each other: the smaller goes to the field that must be smaller.
    for small, large in (("batch_size", "buffer_size"), ("num_envs", "total_steps")):
        a, b = (
            kwargs.get(small, getattr(DEFAULT, small)),
            kwargs.get(large, getattr(DEFAULT, large)),
        )
        kwargs[small], kwargs[large] = min(a, b), max(a, b)
    return DQNConfig(**kwargs)


def toml_literal(value: Any) -> str:
    """How a value is written on the right of `key = ` in TOML (and in `--set key=value`)."""
    if value is None:
        return '"none"'
    return tomli_w.dumps({"v": value})[len("v = ") :].strip()


# Anything a TOML file or a hand-written dict could hold.
toml_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.text(max_size=8),
    st.dates(),
)
any_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=6,
)


def assert_names_key(exc: ConfigError, *keys: str) -> None:
    """The message names one of `keys` (or a field they conflict with)."""
    message = str(exc)
    names = set(keys).union(*(RELATED.get(k, set()) for k in keys))
    assert any(f"{n} = " in message or f"{n!r}" in message for n in names), message


def assert_applied(config: DQNConfig, key: str, value: Any) -> None:
    """The accepted value took effect: the config holds exactly the coerced value."""
    assert getattr(config, key) == coerce(key, value, FIELDS[key])


# ---------------------------------------------------------------------- round trips


@PROPERTY
@given(valid_configs())
def test_dict_and_json_round_trip(config: DQNConfig) -> None:
    assert DQNConfig.from_dict(config.to_dict()) == config
    assert DQNConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@PROPERTY
@given(config=valid_configs())
def test_toml_file_round_trip(config: DQNConfig, scratch: Path) -> None:
    path = scratch / "round_trip.toml"
    path.write_text(config.to_toml(), encoding="utf-8")
    assert DQNConfig.from_toml(path) == config
    # Over a different base: every field is in the file, so the base does not leak through.
    other = DQNConfig(gamma=0.5, max_grad_norm=None, epsilon_end=0.0, hidden_sizes=(7,))
    assert DQNConfig.from_toml(path, base=other) == config


@PROPERTY
@given(valid_configs())
def test_set_overrides_round_trip(config: DQNConfig) -> None:
    overrides = [f"{k}={toml_literal(v)}" for k, v in config.to_dict().items()]
    assert DEFAULT.with_overrides(overrides) == config


@PROPERTY
@given(st.sampled_from(sorted(FIELDS)).flatmap(lambda k: st.tuples(st.just(k), valid_values(k))))
def test_one_valid_value_is_applied(item: tuple[str, Any]) -> None:
    key, value = item
    try:
        config = DEFAULT.with_overrides([f"{key}={toml_literal(value)}"])
    except ConfigError as exc:  # only a conflict with another field's default may refuse it
        assert key in RELATED, exc
        assert_names_key(exc, key)
        return
    assert getattr(config, key) == value


# ---------------------------------------------------------------------- invalid input


@PROPERTY
@given(st.sampled_from(sorted(FIELDS)), any_values)
@example("gamma", float("nan"))
@example("v_min", float("-inf"))
@example("hidden_sizes", [])
@example("max_grad_norm", "null")
@example("total_steps", True)
@example("seed", 2**64)
@example("torch_threads", 10**6)
def test_any_value_for_a_known_key(key: str, value: Any) -> None:
    try:
        config = DQNConfig.from_dict({key: value})
    except ConfigError as exc:
        assert_names_key(exc, key)
        return
    assert_applied(config, key, value)


@PROPERTY
@given(st.dictionaries(st.text(max_size=12), any_values, max_size=3))
def test_unknown_keys_are_refused(data: dict[str, Any]) -> None:
    unknown = [k for k in data if k not in FIELDS]
    try:
        config = DQNConfig.from_dict(data)
    except ConfigError as exc:
        assert_names_key(exc, *data)
        return
    assert not unknown
    for key, value in data.items():
        assert_applied(config, key, value)


@pytest.mark.parametrize("data", [None, [("gamma", 0.5)], "gamma=0.5", 3, {1: 2}, {None: 0}])
def test_not_a_table(data: Any) -> None:
    with pytest.raises(ConfigError, match=r"must be a table|unknown key"):
        DQNConfig.from_dict(data)


override_texts = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda k, v: f"{k}={v}",
        st.one_of(st.sampled_from(sorted(FIELDS)), st.text(max_size=8)),
        st.one_of(st.text(max_size=20), any_values.map(lambda v: repr(v))),
    ),
)


@PROPERTY
@given(override_texts)
@example("gamma=0.5\ntotal_steps=5")
@example("gamma=0.5 # a comment")
@example("hidden_sizes=[64, 64")
@example("total_steps=" + "9" * 5_000)
@example("device=")
@example(" = 1")
def test_any_set_string(text: str) -> None:
    try:
        config = DEFAULT.with_overrides([text])
    except ConfigError as exc:
        message = str(exc)
        key = text.partition("=")[0].strip()
        if "=" in text and key:
            assert_names_key(exc, key)
            assert key in FIELDS or f"unknown key {key!r} in --set" in message
        else:
            assert "is malformed; expected key=value" in message
        return
    key, value = parse_override(text)
    assert key in FIELDS
    assert_applied(config, key, value)


@PROPERTY
@given(
    data=st.dictionaries(
        st.one_of(st.sampled_from(sorted(FIELDS)), st.text(min_size=1, max_size=8)),
        any_values,
        max_size=4,
    )
)
def test_any_toml_file(data: dict[str, Any], scratch: Path) -> None:
    path = scratch / "any.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    try:
        config = DQNConfig.from_toml(path)
    except ConfigError as exc:
        assert_names_key(exc, *data)
        return
    for key, value in data.items():  # every key applied, none ignored
        assert key in FIELDS
        assert_applied(config, key, value)


@PROPERTY
@given(
    text=st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
)
@example(text="gamma = 0.5\ngamma = 0.6")
@example(text="[network]\nkind = 1")
@example(text="total_steps = " + "9" * 5_000)
def test_any_toml_text(text: str, scratch: Path) -> None:
    path = scratch / "text.toml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(ConfigError):  # any outcome but another exception type
        DQNConfig.from_toml(path)


@PROPERTY
@given(data=st.binary(max_size=40))
def test_any_toml_bytes(data: bytes, scratch: Path) -> None:
    path = scratch / "bytes.toml"
    path.write_bytes(data)
    try:
        read_toml(path)
    except ConfigError as exc:
        assert str(path) in str(exc)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config")


# ---------------------------------------------------------------------- found by the above


def test_override_with_a_newline_sets_no_other_key() -> None:
    """`--set 'gamma=0.5\\ntotal_steps=5'` used to set gamma and silently drop total_steps."""
    with pytest.raises(ConfigError, match=r"gamma = '0.5\\ntotal_steps=5' is invalid"):
        DEFAULT.with_overrides(["gamma=0.5\ntotal_steps=5"])


def test_none_survives_toml_when_the_default_is_not_none(tmp_path: Path) -> None:
    """max_grad_norm = None (no clipping) used to come back from TOML as the default 10.0."""
    path = tmp_path / "c.toml"
    path.write_text(DQNConfig(max_grad_norm=None).to_toml())
    assert DQNConfig.from_toml(path).max_grad_norm is None
    # Where None is the default, the key is still left out.
    assert "max_episode_steps" not in TabularConfig().to_toml()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"v_min": math.nan}, "v_min = nan is out of range"),
        ({"v_min": -math.inf, "v_max": math.inf}, "v_min = -inf is out of range"),
        ({"torch_threads": 10**6}, "torch_threads = 1000000 is out of range"),
        ({"seed": 2**64}, "seed = 18446744073709551616 is out of range"),
        ({"seed": -1}, "seed = -1 is out of range"),
    ],
)
def test_values_that_crashed_later_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DQNConfig(**changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"batch_size": 10**12},
            "batch_size = 1000000000000 is larger than buffer_size = 100000; allowed: at most "
            "buffer_size",
        ),
        (
            {"total_steps": 200, "num_envs": 1_000},
            "num_envs = 1000 is out of range; allowed: [1, 200] (at most total_steps = 200",
        ),
        (
            {"num_envs": MAX_NUM_ENVS + 1},
            f"num_envs = {MAX_NUM_ENVS + 1} is out of range; allowed: [1, {MAX_NUM_ENVS}] "
            f"(at most MAX_NUM_ENVS = {MAX_NUM_ENVS}",
        ),
    ],
)
def test_values_bounded_by_another_field(changes: dict[str, Any], message: str) -> None:
    """A batch larger than the buffer, or more envs than steps (a million envs for 200 steps
    used to run a million steps), is refused with the bound."""
    with pytest.raises(ConfigError) as info:
        DQNConfig(**changes)
    assert message in str(info.value)


def test_values_at_their_bound_are_accepted() -> None:
    assert DQNConfig(batch_size=100_000, buffer_size=100_000).batch_size == 100_000
    assert DQNConfig(total_steps=200, num_envs=200).num_envs == 200
    assert DQNConfig(num_envs=MAX_NUM_ENVS).num_envs == MAX_NUM_ENVS


@pytest.mark.parametrize("text", ["[64, 64", "64, 64]", "[64,64]]", "64,,64", "64,", ",64", ""])
def test_malformed_list_strings_are_refused(text: str) -> None:
    """`--set 'hidden_sizes=[64, 64'` (unclosed) used to be read as (64, 64): brackets were
    stripped blindly."""
    with pytest.raises(ConfigError, match=r"hidden_sizes = .* is invalid; allowed: a list of"):
        DEFAULT.with_overrides([f"hidden_sizes={text}"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("[64, 64]", (64, 64)), ("64,64", (64, 64)), (" 8 , 4 ", (8, 4))],
)
def test_list_strings_that_are_accepted(text: str, expected: tuple[int, ...]) -> None:
    """A TOML list, or a bare comma list (which TOML does not parse, so it stays a string)."""
    assert DEFAULT.with_overrides([f"hidden_sizes={text}"]).hidden_sizes == expected
    assert coerce("hidden_sizes", text.strip("[]"), FIELDS["hidden_sizes"]) == expected


def test_overlong_integers(tmp_path: Path) -> None:
    digits = "9" * 5_000  # more than Python converts from text
    with pytest.raises(ConfigError, match="total_steps = '9999"):
        DEFAULT.with_overrides([f"total_steps={digits}"])
    path = tmp_path / "c.toml"
    path.write_text(f"total_steps = {digits}\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        DQNConfig.from_toml(path)


def test_config_path_that_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"cannot be read \(Not a directory\)"):
        read_toml(tmp_path / "file" / "c.toml")


def test_messages_name_the_key_and_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'gama' in --set; did you mean 'gamma'\?"):
        DEFAULT.with_overrides(["gama=0.5"])
    with pytest.raises(
        ConfigError, match=r"max_grad_norm = 'x' is invalid; allowed: a number or none"
    ):
        DQNConfig.from_dict({"max_grad_norm": "x"})
    with pytest.raises(
        ConfigError, match=r"loss = 'l1' is invalid; allowed: one of 'huber', 'mse'"
    ):
        DQNConfig.from_dict({"loss": "l1"})
    with pytest.raises(
        ConfigError, match=r"epsilon_end = 0.05 is out of range; allowed: \[0, 0.01\]"
    ):
        DQNConfig(epsilon_start=0.01)


def test_tabular_config_round_trips(tmp_path: Path) -> None:
    config = TabularConfig(max_episode_steps=50, alpha=0.3, epsilon_decay="exponential")
    assert TabularConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "t.toml"
    path.write_text(config.to_toml())
    assert TabularConfig.from_toml(path) == config
    assert TabularConfig().with_overrides(["max_episode_steps=none"]).max_episode_steps is None


def test_dataclass_fields_all_covered() -> None:
    numeric = {
        f.name for f in dataclasses.fields(DQNConfig) if _base_type(FIELDS[f.name]) in (int, float)
    }
    assert numeric == set(BOUNDS)


@pytest.mark.parametrize(
    ("field", "value"),
    [("loss", "l2"), ("exploration", "greedy"), ("engine", "jax"), ("distributional", "iqn")],
)
def test_choices_are_checked_when_built_from_python(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"{field} = '{value}' is invalid; allowed: one of"):
        DQNConfig(**{field: value})


# ---------------------------------------------------------------------- declared ranges


def declared_ranges(cls: type[ConfigBase]) -> dict[str, Range]:
    """Each field's Range, read from its Annotated type."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = {}
    for f in dataclasses.fields(cls):
        found = [m for m in getattr(hints[f.name], "__metadata__", ()) if isinstance(m, Range)]
        if found:
            out[f.name] = found[0]
    return out


def test_declared_ranges_are_the_known_ones() -> None:
    """The ranges the fields declare are BOUNDS, the independent table above. num_envs declares
    only its lower bound: its upper one depends on total_steps (check_num_envs)."""
    declared = {
        name: (r.low, r.high, r.low_open, r.high_open)
        for name, r in declared_ranges(DQNConfig).items()
        if name != "hidden_sizes"  # its entries' range: >= 1
    }
    assert declared == {**BOUNDS, "num_envs": (1, None, False, False)}
    assert declared_ranges(DQNConfig)["hidden_sizes"] == Range(1)


def range_message(name: str, value: float, r: Range) -> str:
    """The refusal `check_range` writes, spelled out here independently."""
    low = "-inf" if r.low is None else f"{r.low:g}"
    high = "inf" if r.high is None else f"{r.high:g}"
    left, right = "(" if r.low_open else "[", ")" if r.high_open else "]"
    return f"{name} = {value!r} is out of range; allowed: {left}{low}, {high}{right}"


# Fields bounded by another as well: the partner moved out of the way of the value tried.
def _room_for(name: str, value: Any) -> dict[str, Any]:
    partners = {
        "epsilon_start": {"epsilon_end": 0.0},
        "v_min": {"v_max": value + 1.0},
        "v_max": {"v_min": value - 1.0},
        "batch_size": {"buffer_size": value},
        "buffer_size": {"batch_size": 1},
        "num_envs": {"total_steps": max(value, 1)},
        "total_steps": {"num_envs": 1},
    }
    return partners.get(name, {})


def _inside(r: Range, is_int: bool) -> st.SearchStrategy[Any]:
    if is_int:
        high = r.high if r.high is not None else 2**70
        return st.integers(int(r.low if r.low is not None else -(2**70)), int(high))
    low = r.low if r.low is not None else -1e6  # v_min/v_max: a partner must fit beside them
    high = r.high if r.high is not None else 1e6 if r.low is None else None
    return st.floats(
        low, high, exclude_min=r.low_open, exclude_max=r.high_open, allow_nan=False
    ).filter(math.isfinite)


RANGED = [
    (cls, name, r) for cls in (DQNConfig, TabularConfig) for name, r in declared_ranges(cls).items()
]


@PROPERTY
@given(st.sampled_from(RANGED).flatmap(lambda c: st.tuples(st.just(c), st.data())))
def test_values_inside_a_declared_range_are_accepted(item: tuple[Any, Any]) -> None:
    (cls, name, r), data = item
    base = _base_type(cls.field_types()[name])
    is_int = base is int or get_origin(base) is tuple
    value = data.draw(_inside(r, is_int))
    if name == "num_envs":
        value = min(value, MAX_NUM_ENVS)
    given = (value,) if get_origin(base) is tuple else value
    config = cls(**{name: given, **_room_for(name, value)})
    assert getattr(config, name) == given


def _just_outside(r: Range, is_int: bool) -> list[float]:
    """The nearest refused values on each bounded side (and NaN for floats)."""
    out: list[float] = [] if is_int else [math.nan, math.inf]
    step = (lambda x, d: x + d) if is_int else (lambda x, d: math.nextafter(x, d * math.inf))
    if r.low is not None:
        out.append(r.low if r.low_open else step(r.low, -1))
    if r.high is not None:
        out.append(r.high if r.high_open else step(r.high, 1))
    return out


@pytest.mark.parametrize(
    ("cls", "name", "r"), RANGED, ids=[f"{c.__name__}.{n}" for c, n, _ in RANGED]
)
def test_values_just_outside_a_declared_range_are_refused(
    cls: type[ConfigBase], name: str, r: Range
) -> None:
    base = _base_type(cls.field_types()[name])
    is_tuple = get_origin(base) is tuple
    for value in _just_outside(r, base is int or is_tuple):
        shown = f"{name} entry" if is_tuple else name
        with pytest.raises(ConfigError) as info:
            cls(**{name: (value,) if is_tuple else value, **_room_for(name, 1)})
        assert str(info.value) == range_message(shown, value, r)


def test_optional_fields_take_none() -> None:
    assert DQNConfig(max_grad_norm=None, checkpoint_max_overhead=None).max_grad_norm is None
    assert TabularConfig(max_episode_steps=None).max_episode_steps is None


# ---------------------------------------------------------------------- the settings table


@pytest.mark.parametrize("cls", [DQNConfig, TabularConfig])
def test_settings_table_lists_every_field_with_its_range(cls: type[ConfigBase]) -> None:
    rows = describe_settings(cls)
    assert [r.name for r in rows] == [f.name for f in dataclasses.fields(cls)]
    ranged = declared_ranges(cls)
    for row in rows:
        assert row.group in ("algorithm", "run")
        assert row.doc, row.name
        if row.name in ranged:
            assert str(ranged[row.name]) in row.allowed, row.name
        # The default is shown as `--set` takes it.
        key, value = parse_override(f"{row.name}={row.default}")
        assert getattr(cls.from_dict({key: value}), key) == getattr(cls(), key), row.name


def test_settings_table_rows() -> None:
    """Hand-checked rows: the range text, relations, choices, groups."""
    rows = {r.name: r for r in describe_settings(DQNConfig)}
    assert (rows["gamma"].type, rows["gamma"].default, rows["gamma"].allowed) == (
        "float",
        "0.99",
        "[0, 1]",
    )
    assert rows["tau"].allowed == "(0, 1]"
    assert rows["learning_rate"].allowed == "> 0"
    assert rows["learning_starts"].allowed == ">= 0"
    assert rows["v_min"].allowed == "finite"
    assert rows["epsilon_end"].allowed == "[0, 1], at most epsilon_start"
    assert rows["batch_size"].allowed == ">= 1, at most buffer_size"
    assert rows["hidden_sizes"].allowed == "each >= 1, at least one"
    assert (rows["hidden_sizes"].type, rows["hidden_sizes"].default) == ("list of int", "[64, 64]")
    assert rows["max_grad_norm"].type == "float or none"
    assert rows["loss"].type == "'huber' | 'mse'"
    assert rows["seed"].allowed == f"[0, {MAX_SEED}]"
    run = {r.name for r in rows.values() if r.group == "run"}
    assert run == {
        "seed", "torch_threads", "device", "engine", "eval_interval", "eval_episodes",
        "checkpoint_interval", "checkpoint_minutes", "checkpoint_max_overhead", "tensorboard",
        "log_grad_norms", "on_nonfinite",
    }  # fmt: skip
    assert {r.name for r in describe_settings(TabularConfig) if r.group == "run"} == {"seed"}


def test_shared_names_mean_the_same_in_both_configs() -> None:
    """One name per concept: a key both configs have allows the same values in both."""
    dqn = {r.name: r for r in describe_settings(DQNConfig)}
    tab = {r.name: r for r in describe_settings(TabularConfig)}
    shared = dqn.keys() & tab.keys()
    assert "exploration_fraction" in shared
    for name in shared:
        assert (dqn[name].type, dqn[name].allowed, dqn[name].group) == (
            tab[name].type,
            tab[name].allowed,
            tab[name].group,
        ), name


# ---------------------------------------------------------------------- renamed keys


def test_old_key_decay_fraction_still_loads(tmp_path: Path) -> None:
    """An old run dir's config.toml says decay_fraction: it is read as exploration_fraction."""
    path = tmp_path / "config.toml"
    path.write_text("decay_fraction = 0.25\nnum_episodes = 40\n")
    with pytest.warns(
        DeprecationWarning, match="'decay_fraction' .* renamed 'exploration_fraction'"
    ):
        config = TabularConfig.from_toml(path, base=TabularConfig(exploration_fraction=0.9))
    assert (config.exploration_fraction, config.num_episodes) == (0.25, 40)
    with pytest.warns(DeprecationWarning):
        assert TabularConfig().with_overrides(["decay_fraction=0.75"]).exploration_fraction == 0.75
    with pytest.warns(DeprecationWarning):
        assert TabularConfig.from_dict({"decay_fraction": 1}).exploration_fraction == 1.0
    # Out of range under its old name: the message names the key the value went to.
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(
            ConfigError, match=r"exploration_fraction = 0.0 is out of range; allowed: \(0, 1\]"
        ),
    ):
        TabularConfig.from_dict({"decay_fraction": 0})


def test_old_and_new_key_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="sets both 'decay_fraction' and 'exploration_fraction'"):
        TabularConfig.from_dict({"decay_fraction": 0.5, "exploration_fraction": 0.5})
    with pytest.raises(ConfigError, match="--set sets both"):
        TabularConfig().with_overrides(["decay_fraction=0.5", "exploration_fraction=0.5"])


def test_old_key_is_not_a_dqn_key() -> None:
    with pytest.raises(ConfigError, match="unknown key 'decay_fraction'"):
        DQNConfig.from_dict({"decay_fraction": 0.5})
