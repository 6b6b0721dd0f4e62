"""Making Gymnasium envs with clear errors, and describing their spaces.

Image envs (MinAtar, Atari) get their standard wrappers here too, so the agent only sees a Box or
a Discrete observation space and a Discrete action space.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from qlearn.errors import EnvError

EnvFactory = Callable[..., gym.Env]


def _suggest(env_id: str) -> str:
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _register_optional(env_id: str) -> None:
    """Register qlearn's toy ids, or import the packages that register MinAtar and Atari ids,
    when those ids are asked for."""
    if env_id.startswith("qlearn/"):
        from qlearn.envs.toy import register_toy_envs

        register_toy_envs()
    elif env_id.startswith("MinAtar/"):
        try:
            from minatar.gym import register_envs
        except ImportError:
            raise EnvError(
                f"env {env_id!r} needs the minatar package; install qlearn[minatar]"
            ) from None
        # Importing minatar registers nothing. register_envs() adds MinAtar/{Asterix, Breakout,
        # Freeway, Seaquest, SpaceInvaders}-v0 (all 6 actions) and -v1 (the game's minimal action
        # set, e.g. 3 for Breakout); registering twice would log an override warning.
        if "MinAtar/Breakout-v1" not in gym.registry:
            register_envs()
    elif env_id.startswith("ALE/"):
        try:
            import ale_py

            gym.register_envs(ale_py)
        except ImportError:
            raise EnvError(
                f"env {env_id!r} needs the ale-py package; install qlearn[atari]"
            ) from None


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/")


def make_env(
    env_id: str,
    *,
    render_mode: str | None = None,
    max_episode_steps: int | None = None,
    frame_stack: int = 4,
    **kwargs: Any,
) -> gym.Env:
    """`gymnasium.make` with one clear EnvError for an unknown or uninstalled id.

    Atari ids get the standard preprocessing: AtariPreprocessing (84x84 grey, frame skip 4, no-op
    starts) on an env made with frameskip=1 and ALE v5's sticky actions (repeat probability 0.25),
    then `frame_stack` frames stacked. MinAtar observations are moved to channels-first.
    """
    _register_optional(env_id)
    if is_atari(env_id):
        kwargs.setdefault("frameskip", 1)
        kwargs.setdefault("repeat_action_probability", 0.25)
    if render_mode is not None:  # envs without rendering do not take the argument at all
        kwargs["render_mode"] = render_mode
    try:
        env = gym.make(env_id, max_episode_steps=max_episode_steps, **kwargs)
    except ModuleNotFoundError as exc:  # `module:Env-v0` ids import a module first
        raise EnvError(f"env id {env_id!r}: {exc}") from None
    except gym.error.NameNotFound:
        raise EnvError(f"unknown env id {env_id!r}{_suggest(env_id)}") from None
    except (gym.error.VersionNotFound, gym.error.DeprecatedEnv) as exc:
        raise EnvError(f"env id {env_id!r}: {exc}{_suggest(env_id)}") from None
    except gym.error.NamespaceNotFound:
        raise EnvError(f"unknown env namespace in {env_id!r}{_suggest(env_id)}") from None
    except gym.error.DependencyNotInstalled as exc:
        raise EnvError(f"env {env_id!r} needs an extra package: {exc}") from None
    except gym.error.Error as exc:
        raise EnvError(f"cannot make env {env_id!r}: {exc}") from None
    if is_atari(env_id):
        try:
            env = gym.wrappers.AtariPreprocessing(env, frame_skip=4, screen_size=84, noop_max=30)
        except gym.error.DependencyNotInstalled:
            raise EnvError(
                f"env {env_id!r} needs opencv for its preprocessing; "
                "pip install opencv-python-headless"
            ) from None
        env = gym.wrappers.FrameStackObservation(env, frame_stack)
    elif env_id.startswith("MinAtar/"):
        env = _channels_first(env)
    return env


def _channels_first(env: gym.Env) -> gym.Env:
    space = env.observation_space
    assert isinstance(space, gym.spaces.Box)
    h, w, c = space.shape
    new_space = gym.spaces.Box(0, 1, shape=(c, h, w), dtype=np.uint8)
    return gym.wrappers.TransformObservation(
        env, lambda obs: np.ascontiguousarray(np.moveaxis(obs, -1, 0), dtype=np.uint8), new_space
    )


def stacked_frame_count(env: gym.Env) -> int:
    """Frames `FrameStackObservation` stacks along the first axis of `env`'s observations, found
    in its wrapper chain; 0 where no such wrapper is."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.FrameStackObservation):
            return int(env.stack_size)
        env = env.env
    return 0


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """An env's spaces as the agent needs them; stored in checkpoints and compared on load."""

    obs_kind: str  # "box" or "discrete"
    obs_shape: tuple[int, ...]  # Box shape, or (n,) for Discrete
    obs_dtype: str
    num_actions: int
    frame_stack: int = dataclasses.field(default=0, compare=False)
    """Frames stacked along the first observation axis (Atari's `frame_stack`), 0 when
    observations are not stacked frames. It changes how the replay stores observations, never
    what a network sees, so loading ignores it: checkpoints written before it existed lack it."""

    def describe(self) -> str:
        if self.obs_kind == "discrete":
            obs = f"Discrete({self.obs_shape[0]})"
        else:
            obs = f"Box{self.obs_shape} {self.obs_dtype}"
        return f"observations {obs}, actions Discrete({self.num_actions})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "obs_kind": self.obs_kind,
            "obs_shape": list(self.obs_shape),
            "obs_dtype": self.obs_dtype,
            "num_actions": self.num_actions,
            "frame_stack": self.frame_stack,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnvSpec:
        return cls(
            obs_kind=str(data["obs_kind"]),
            obs_shape=tuple(int(x) for x in data["obs_shape"]),
            obs_dtype=str(data["obs_dtype"]),
            num_actions=int(data["num_actions"]),
            frame_stack=int(data.get("frame_stack", 0)),
        )


def env_spec(
    observation_space: gym.Space,
    action_space: gym.Space,
    name: str = "env",
    *,
    frame_stack: int = 0,
) -> EnvSpec:
    """Describe the spaces, or raise EnvError for any space DQN does not support.

    `frame_stack` says how many frames each observation stacks (see `stacked_frame_count`).
    """
    if not isinstance(action_space, gym.spaces.Discrete):
        raise EnvError(
            f"{name} has action space {action_space}; allowed: Discrete "
            "(DQN picks among a finite set of actions)"
        )
    if action_space.start != 0:
        raise EnvError(f"{name} has action space {action_space}; allowed: Discrete starting at 0")
    if isinstance(observation_space, gym.spaces.Discrete):
        return EnvSpec("discrete", (int(observation_space.n),), "int64", int(action_space.n))
    if isinstance(observation_space, gym.spaces.Box):
        return EnvSpec(
            "box",
            tuple(int(x) for x in observation_space.shape),
            str(observation_space.dtype),
            int(action_space.n),
            frame_stack=frame_stack,
        )
    raise EnvError(f"{name} has observation space {observation_space}; allowed: Box or Discrete")


def check_discrete_env(env: gym.Env, name: str = "env") -> tuple[int, int]:
    """Return (num_states, num_actions), or raise EnvError unless both spaces are Discrete."""
    obs, act = env.observation_space, env.action_space
    if not isinstance(obs, gym.spaces.Discrete) or not isinstance(act, gym.spaces.Discrete):
        raise EnvError(
            f"{name} has observation space {obs} and action space {act}; "
            "allowed: Discrete observations and Discrete actions (a Q-table needs both finite)"
        )
    return int(obs.n), int(act.n)


class ObsEncoder:
    """Turns a batch of raw observations into the network's float32 input.

    Discrete observations become one-hot vectors; flat Box observations are cast to float32; image
    observations (uint8) pass through unchanged and the CNN torso scales them.
    """

    def __init__(self, spec: EnvSpec) -> None:
        self.spec = spec
        self.one_hot = spec.obs_kind == "discrete"
        self.input_shape: tuple[int, ...] = spec.obs_shape
        self.input_dim = math.prod(spec.obs_shape)
        if self.one_hot:
            self._eye = np.eye(spec.obs_shape[0], dtype=np.float32)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """(batch, *obs_shape) or (batch,) raw -> (batch, *input_shape) network input."""
        if self.one_hot:
            return self._eye[np.asarray(obs, dtype=np.int64).reshape(-1)]
        if self.spec.obs_dtype == "uint8":
            return np.asarray(obs)
        return np.asarray(obs, dtype=np.float32)

    def storage(self) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of one observation as kept in the replay buffer."""
        if self.one_hot:
            return (), np.dtype(np.int64)
        return self.spec.obs_shape, np.dtype(self.spec.obs_dtype)


def make_vector_env(
    env_id: str,
    num_envs: int,
    *,
    frame_stack: int = 4,
    max_episode_steps: int | None = None,
) -> gym.vector.VectorEnv:
    """A Gymnasium vector env with next-step autoreset.

    Uses the env's own numpy-vectorised implementation where Gymnasium registers one (CartPole),
    else a SyncVectorEnv of `make_env` copies.
    """
    _register_optional(env_id)
    spec = gym.spec(env_id) if env_id in gym.registry else None
    if spec is not None and spec.vector_entry_point is not None and max_episode_steps is None:
        try:
            return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
        except gym.error.Error:
            pass

    def factory() -> gym.Env:
        return make_env(env_id, max_episode_steps=max_episode_steps, frame_stack=frame_stack)

    make_env(env_id, max_episode_steps=max_episode_steps, frame_stack=frame_stack).close()
    return gym.vector.SyncVectorEnv([factory] * num_envs)
