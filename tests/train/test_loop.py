"""The training loop driven directly, without `DQN`: when it calls its hooks, what it counts, and
what its env adapters return."""

from __future__ import annotations

import itertools
import signal
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from qlearn.agents.dqn import DQNLearner
from qlearn.checkpoint import Counters
from qlearn.config import DQNConfig
from qlearn.envs import env_spec, make_vector_env
from qlearn.errors import EnvError
from qlearn.monitor import Monitor
from qlearn.train import loop
from qlearn.train.loop import EnvStep, Hooks, NextStepEnvs, OneEnv, TrainingInterrupted
from qlearn.train.process import StopFlag

# No learning (learning starts after the last step): only the envs, the replay and the hooks run.
CONFIG = DQNConfig(
    total_steps=1_000,
    learning_starts=10_000,
    buffer_size=2_000,
    hidden_sizes=(8,),
    eval_interval=100,
    checkpoint_interval=0,
    checkpoint_minutes=0.0,
)


class Recording:
    """Wraps an adapter and records (step before, step after) of every env step."""

    def __init__(self, envs: OneEnv | NextStepEnvs, counters: Counters) -> None:
        self.envs, self.counters = envs, counters
        self.num_envs = envs.num_envs
        self.steps: list[int] = []

    def reset(self, seed: int | None = None) -> np.ndarray:
        return self.envs.reset(seed)

    def step(self, actions: np.ndarray) -> EnvStep:
        out = self.envs.step(actions)
        self.steps.append(self.counters.step + out.num_made)
        return out


def run(
    envs: OneEnv | NextStepEnvs,
    config: DQNConfig = CONFIG,
    hooks: Hooks | None = None,
    stop: StopFlag | None = None,
    counters: Counters | None = None,
) -> tuple[Recording, Counters, loop.LoopResult]:
    counters = counters or Counters(target_step=1_000)
    target = counters.target_step
    learner = DQNLearner(env_spec(gym.spaces.Box(-5, 5, (4,)), gym.spaces.Discrete(2)), config)
    recording = Recording(envs, counters)
    result = loop.train(
        recording,  # type: ignore[arg-type]
        learner,
        config,
        counters,
        Monitor(None, target),
        hooks=hooks,
        stop=stop,
    )
    return recording, counters, result


def crossed(steps: list[int], interval: int, start: int = 0) -> list[int]:
    """The steps after which a multiple of `interval` was passed, counted one by one."""
    out = []
    for before, after in zip([start, *steps], steps, strict=False):
        if any(s % interval == 0 for s in range(before + 1, after + 1)):
            out.append(after)
    return out


@pytest.mark.parametrize("num_envs", [1, 3, 8])
def test_eval_hook_is_called_once_per_interval_crossed_and_at_the_end(num_envs: int) -> None:
    """With many envs the counter jumps by up to num_envs: the hook still runs once for each
    multiple of eval_interval passed, at the first step past it, and at the last step."""
    calls: list[int] = []

    def evaluate(step: int) -> bool:
        calls.append(step)
        return False

    envs: OneEnv | NextStepEnvs
    if num_envs == 1:
        envs = OneEnv(gym.make("CartPole-v1"))
    else:
        envs = NextStepEnvs(make_vector_env("CartPole-v1", num_envs))
    recording, counters, result = run(envs, hooks=Hooks(evaluate=evaluate))
    steps = recording.steps
    expected = crossed(steps, 100)
    if steps[-1] not in expected:
        expected.append(steps[-1])
    assert calls == expected
    assert len(calls) == 10
    assert all(100 * k <= s < 100 * k + num_envs for k, s in enumerate(calls, 1))
    assert counters.step == steps[-1] >= 1_000
    assert counters.episodes > 0
    assert not result.stopped_early
    if num_envs > 1:
        assert any(b - a < num_envs for a, b in itertools.pairwise(steps))  # masked


def test_eval_hook_returning_true_stops_training() -> None:
    calls: list[int] = []

    def evaluate(step: int) -> bool:
        calls.append(step)
        return step >= 300

    _, counters, result = run(OneEnv(gym.make("CartPole-v1")), hooks=Hooks(evaluate=evaluate))
    assert calls == [100, 200, 300]
    assert result.stopped_early and counters.step == 300


def test_checkpoint_hook_is_called_at_each_interval_and_on_a_signal(tmp_path: Path) -> None:
    """Every checkpoint_interval steps (the overhead cap off); a SIGTERM stops training after a
    checkpoint, and one written at that very step is not written twice."""
    config = CONFIG.replace(checkpoint_interval=250, checkpoint_max_overhead=None)
    counters = Counters(target_step=1_000)
    calls: list[int] = []

    def checkpoint() -> Path:
        calls.append(counters.step)
        return tmp_path / f"step_{counters.step}"

    envs = NextStepEnvs(make_vector_env("CartPole-v1", 4))
    recording, _, result = run(envs, config, Hooks(checkpoint=checkpoint), counters=counters)
    assert calls == crossed(recording.steps, 250)
    assert len(calls) == 4 and result.checkpoint_step == calls[-1]

    for signal_at in (500, 300):  # at a checkpoint's step (500, not written twice), or not
        stop = StopFlag()

        def evaluate(step: int, signal_at: int = signal_at, stop: StopFlag = stop) -> bool:
            if step >= signal_at:
                stop.signal = signal.SIGTERM
            return False

        calls.clear()
        counters = Counters(target_step=1_000)
        hooks = Hooks(evaluate=evaluate, checkpoint=checkpoint)
        with pytest.raises(
            TrainingInterrupted, match=rf"SIGTERM at step {signal_at}; checkpoint saved to .*"
        ):
            run(OneEnv(gym.make("CartPole-v1")), config, hooks, stop, counters=counters)
        assert calls == [250, signal_at]
        assert counters.step == signal_at


def test_the_adapters_agree_on_one_scripted_episode() -> None:
    """OneEnv resets in the same step and reports the final obs; NextStepEnvs masks the reset
    step. Both report the episode's return and length."""
    env_a, env_b = gym.make("CartPole-v1"), gym.make("CartPole-v1")
    one = OneEnv(env_a)
    vec = NextStepEnvs(gym.vector.SyncVectorEnv([lambda: env_b]))
    np.testing.assert_array_equal(one.reset(seed=3), vec.reset(seed=3))
    action = np.array([1])
    for t in range(1, 100):
        a, b = one.step(action), vec.step(action)
        np.testing.assert_array_equal(a.next_obs, b.next_obs)
        assert a.rewards.tolist() == b.rewards.tolist() == [1.0]
        assert a.num_made == b.num_made == 1 and a.made is None and b.made.tolist() == [True]
        if a.terminated[0]:
            assert a.episodes == b.episodes == [(float(t), t)]
            assert not np.array_equal(a.obs, a.next_obs)  # the reset observation
            reset = vec.step(action)
            assert reset.num_made == 0 and reset.made.tolist() == [False]
            assert reset.episodes == []
            np.testing.assert_array_equal(reset.obs, a.obs)  # both reset unseeded from seed 3
            break
    else:
        pytest.fail("pushing right for 99 steps never ended the episode")


def test_nonfinite_reward_is_reported_by_either_adapter() -> None:
    class Spoiled(gym.Wrapper):
        def step(self, action):  # type: ignore[no-untyped-def]
            obs, _, terminated, truncated, info = self.env.step(action)
            return obs, 1e39, terminated, truncated, info  # beyond float32

    one = OneEnv(Spoiled(gym.make("CartPole-v1")))
    vec = NextStepEnvs(gym.vector.SyncVectorEnv([lambda: Spoiled(gym.make("CartPole-v1"))]))
    for envs in (one, vec):
        envs.reset(seed=0)
        assert envs.step(np.array([0])).nonfinite == "reward"
    unchecked = OneEnv(Spoiled(gym.make("CartPole-v1")), check_finite=False)
    unchecked.reset(seed=0)
    assert unchecked.step(np.array([0])).nonfinite is None


def test_same_step_vector_envs_are_refused() -> None:
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("CartPole-v1")] * 2, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    with pytest.raises(EnvError, match="autoreset_mode"):
        NextStepEnvs(envs)
