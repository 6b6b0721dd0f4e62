"""`qlearn.envs.core` without images: clear errors for ids and spaces DQN cannot use, the env
spec and its round trip, observation encoding, and vector envs. MinAtar and Atari are in
test_image_envs.py."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from qlearn.envs import (
    EnvSpec,
    ObsEncoder,
    check_discrete_env,
    env_spec,
    make_env,
    make_vector_env,
)
from qlearn.errors import EnvError

DISCRETE_2 = gym.spaces.Discrete(2)


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("CartPol-v1", r"^unknown env id 'CartPol-v1'; did you mean 'CartPole-v1'"),
        ("NoSuchEnv-v0", r"^unknown env id 'NoSuchEnv-v0'$"),  # nothing close: no suggestion
        ("CartPole-v9", r"^env id 'CartPole-v9': Environment version `v9` .* doesn't exist"),
        ("nowhere/CartPole-v1", r"^unknown env namespace in 'nowhere/CartPole-v1'"),
        ("no_such_module:Env-v0", r"^env id 'no_such_module:Env-v0': No module named"),
    ],
)
def test_make_env_refuses_an_unknown_id_with_one_message(env_id: str, message: str) -> None:
    with pytest.raises(EnvError, match=message) as info:
        make_env(env_id)
    assert "\n" not in str(info.value)


def test_make_env_passes_its_settings_on() -> None:
    env = make_env("FrozenLake-v1", max_episode_steps=7, is_slippery=False)
    assert env.spec is not None and env.spec.max_episode_steps == 7
    assert env.unwrapped.spec.kwargs["is_slippery"] is False  # type: ignore[union-attr]
    env.reset(seed=0)
    steps = 0
    truncated = terminated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(0)  # left from the start: never ends by itself
        steps += 1
    assert (steps, terminated, truncated) == (7, False, True)


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("Pendulum-v1", r"^env has action space Box\(-2\.0, 2\.0, \(1,\), float32\); allowed: "),
        ("MountainCarContinuous-v0", r"^env has action space Box.*; allowed: Discrete \(DQN"),
    ],
)
def test_continuous_actions_are_refused_with_one_message(env_id: str, message: str) -> None:
    env = make_env(env_id)
    with pytest.raises(EnvError, match=message) as info:
        env_spec(env.observation_space, env.action_space)
    assert "\n" not in str(info.value)


def test_spaces_dqn_cannot_use_are_refused() -> None:
    box = gym.spaces.Box(-1.0, 1.0, (3,))
    with pytest.raises(EnvError, match=r"^lake has action space Discrete\(4, start=1\); allowed: "):
        env_spec(box, gym.spaces.Discrete(4, start=1), name="lake")
    blackjack = make_env("Blackjack-v1").observation_space  # a Tuple of Discretes
    with pytest.raises(EnvError, match=r"^env has observation space Tuple.*allowed: Box or Discr"):
        env_spec(blackjack, DISCRETE_2)


def test_env_spec_of_box_and_discrete_observations() -> None:
    cartpole = make_env("CartPole-v1")
    assert env_spec(cartpole.observation_space, cartpole.action_space) == EnvSpec(
        "box", (4,), "float32", 2
    )
    lake = make_env("FrozenLake-v1")
    assert env_spec(lake.observation_space, lake.action_space) == EnvSpec(
        "discrete", (16,), "int64", 4
    )
    images = gym.spaces.Box(0, 255, (2, 5, 5), dtype=np.uint8)
    assert env_spec(images, gym.spaces.Discrete(6)) == EnvSpec("box", (2, 5, 5), "uint8", 6)


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        (EnvSpec("box", (4,), "float32", 2), "observations Box(4,) float32, actions Discrete(2)"),
        (EnvSpec("discrete", (16,), "int64", 4), "observations Discrete(16), actions Discrete(4)"),
        (
            EnvSpec("box", (4, 84, 84), "uint8", 6),
            "observations Box(4, 84, 84) uint8, actions Discrete(6)",
        ),
    ],
)
def test_spec_round_trips_through_json_and_describes_itself(spec: EnvSpec, text: str) -> None:
    data = spec.to_dict()
    assert data["obs_shape"] == list(spec.obs_shape)  # a JSON list, not a tuple
    again = EnvSpec.from_dict(json.loads(json.dumps(data)))
    assert again == spec and isinstance(again.obs_shape, tuple)
    assert spec.describe() == text


def test_one_hot_encoding_of_discrete_observations() -> None:
    encode = ObsEncoder(EnvSpec("discrete", (4,), "int64", 2))
    assert (encode.input_shape, encode.input_dim, encode.one_hot) == ((4,), 4, True)
    out = encode(np.array([2, 0, 3]))
    expected = [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.float32))
    assert out.dtype == np.float32
    assert encode(np.array([[1], [1]])).tolist() == [[0, 1, 0, 0], [0, 1, 0, 0]]  # (batch, 1)
    assert encode.storage() == ((), np.dtype(np.int64))  # the index is stored, not the one-hot


def test_box_observations_become_float32_with_the_same_values() -> None:
    encode = ObsEncoder(EnvSpec("box", (2, 3), "float64", 2))
    assert (encode.input_shape, encode.input_dim, encode.one_hot) == ((2, 3), 6, False)
    obs = np.array([[[0.5, -1.25, 3.0], [1e3, 0.0, -2.0]]])  # (batch 1, 2, 3) float64
    out = encode(obs)
    assert out.dtype == np.float32 and out.shape == (1, 2, 3)
    np.testing.assert_array_equal(out, obs.astype(np.float32))
    assert encode.storage() == ((2, 3), np.dtype(np.float64))


def test_image_observations_pass_through_as_uint8() -> None:
    encode = ObsEncoder(EnvSpec("box", (1, 2, 2), "uint8", 3))
    obs = np.arange(8, dtype=np.uint8).reshape(2, 1, 2, 2)
    out = encode(obs)
    assert out.dtype == np.uint8  # the CNN scales them; a float copy would be 4x the memory
    np.testing.assert_array_equal(out, obs)


@pytest.mark.parametrize(
    ("env_id", "kwargs", "shape"),
    [
        ("CartPole-v1", {}, (3, 4)),  # Gymnasium's own numpy-vectorised CartPole
        ("CartPole-v1", {"max_episode_steps": 50}, (3, 4)),  # a SyncVectorEnv of copies
        ("FrozenLake-v1", {}, (3,)),  # no vectorised version: a SyncVectorEnv
    ],
)
def test_vector_env_has_num_envs_and_one_seed_fixes_its_first_observations(
    env_id: str, kwargs: dict, shape: tuple[int, ...]
) -> None:
    first = make_vector_env(env_id, 3, **kwargs)
    second = make_vector_env(env_id, 3, **kwargs)
    assert first.num_envs == 3
    obs_a, _ = first.reset(seed=5)
    obs_b, _ = second.reset(seed=5)
    assert obs_a.shape == shape
    np.testing.assert_array_equal(obs_a, obs_b)
    if env_id == "CartPole-v1":  # a different seed, different starts (FrozenLake's is fixed)
        obs_c, _ = second.reset(seed=6)
        assert not np.array_equal(obs_a, obs_c)
        assert len({tuple(row) for row in obs_a.tolist()}) == 3  # each copy its own start
    first.close()
    second.close()


def test_vector_env_kind_follows_the_time_limit() -> None:
    """CartPole's vectorised version has its own 500-step limit; another limit needs copies."""
    assert not isinstance(make_vector_env("CartPole-v1", 2), gym.vector.SyncVectorEnv)
    limited = make_vector_env("CartPole-v1", 2, max_episode_steps=50)
    assert isinstance(limited, gym.vector.SyncVectorEnv)
    assert limited.envs[0].spec is not None and limited.envs[0].spec.max_episode_steps == 50


def test_vector_env_of_an_unknown_id_is_one_error() -> None:
    with pytest.raises(EnvError, match=r"^unknown env id 'CartPol-v1'; did you mean"):
        make_vector_env("CartPol-v1", 2)


def test_check_discrete_env_returns_the_sizes() -> None:
    assert check_discrete_env(make_env("FrozenLake-v1")) == (16, 4)
    assert check_discrete_env(make_env("Taxi-v4")) == (500, 6)
    with pytest.raises(EnvError, match=r"^cartpole has observation space Box"):
        check_discrete_env(make_env("CartPole-v1"), name="cartpole")
