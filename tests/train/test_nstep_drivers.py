"""n-step returns through the one-env adapter equal those through a vector env of one copy."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from qlearn import DQN, DQNConfig
from qlearn.train import DQN as TrainDQN
from qlearn.train.loop import NextStepEnvs


class ScriptedEpisodes(gym.Env):
    """One action; obs = [episode, t]; reward 1 + t + 10 * episode; episode e lasts
    LENGTHS[e % 4] steps and ends terminated when e is even, truncated when odd."""

    LENGTHS = (5, 2, 1, 4)

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 1_000, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(1)  # no RNG draw changes what is stored
        self.episode = -1
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.episode, self.t], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = 1.0 + self.t + 10.0 * self.episode
        self.t += 1
        end = self.t >= self.LENGTHS[self.episode % 4]
        terminated = end and self.episode % 2 == 0
        return self._obs(), reward, terminated, end and not terminated, {}


CONFIG = DQNConfig(
    total_steps=40,
    learning_starts=1_000,
    buffer_size=100,
    eval_interval=0,
    hidden_sizes=(8,),
    n_step=3,
    gamma=0.5,
)


def stored(agent: DQN) -> dict[str, np.ndarray]:
    return agent.learner.replay.state_dict()


# 15 is mid-episode (episodes end at steps 5, 7, 8, 12, 17, ...): the second call resets the env
# with pending windows. (At an episode's end the one-env adapter resets at once and this env,
# which counts its resets, would then start its next call one episode further than under
# next-step autoreset.)
@pytest.mark.parametrize("steps", [(40,), (15, 25)])
def test_one_env_adapter_stores_what_a_vector_env_stores(
    steps: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same transitions, returns, discounts and flags; also across `learn` calls, whose env
    reset drops the unfinished windows with either."""
    single = DQN(ScriptedEpisodes(), CONFIG)
    for n in steps:
        single.learn(n)

    def vector_envs(agent: DQN) -> NextStepEnvs:
        env = agent._env_instance
        return NextStepEnvs(gym.vector.SyncVectorEnv([lambda: env]))

    monkeypatch.setattr(TrainDQN, "_make_train_envs", vector_envs)
    vector = DQN(ScriptedEpisodes(), CONFIG)
    for n in steps:
        vector.learn(n)

    a, b = stored(single), stored(vector)
    assert len(single.learner.replay) > 20
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert single.counters.step == vector.counters.step == 40
    assert single.counters.episodes == vector.counters.episodes


def test_one_env_n_step_returns_hand_computed() -> None:
    agent = DQN(ScriptedEpisodes(), CONFIG.replace(total_steps=7))  # episodes 0 (5) and 1 (2)
    agent.learn()
    batch = agent.learner.replay.gather(np.arange(len(agent.learner.replay)))
    np.testing.assert_array_equal(
        batch.obs, [[0, 0], [0, 1], [0, 2], [0, 3], [0, 4], [1, 0], [1, 1]]
    )
    # Episode 0: rewards 1..5, terminated after 5 steps; episode 1: 11, 12, truncated after 2.
    np.testing.assert_allclose(
        batch.returns, [1 + 1 + 0.75, 2 + 1.5 + 1, 3 + 2 + 1.25, 4 + 2.5, 5, 11 + 6, 12]
    )
    np.testing.assert_allclose(batch.discounts, [0.125, 0.125, 0.125, 0.25, 0.5, 0.25, 0.5])
    np.testing.assert_array_equal(batch.terminated, [0, 0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(batch.next_obs[:, 1], [3, 4, 5, 5, 5, 2, 2])
