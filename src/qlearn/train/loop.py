"""The training loop, in one function that reads top to bottom like CleanRL's `dqn.py`:

    obs = envs.reset(seed)
    while step < target_step:
        epsilon = schedules.epsilon(config, step)
        actions = learner.act(obs, epsilon)
        next_obs, rewards, terminated, truncated = envs.step(actions)
        replay.add(obs, actions, rewards, next_obs, terminated, truncated)  # the final obs
        step += the transitions this made (one per env, less next-step autoreset's reset steps)
        every train_interval steps after learning_starts: learner.update(gradient_steps, beta)
        every target_update_interval steps: learner.sync_target()
        as their intervals are crossed: a train.csv row, the evaluation hook, the checkpoint hook
        on SIGINT/SIGTERM: the checkpoint hook, then TrainingInterrupted

It steps the envs through an adapter that says, per step, which transitions were made and
which episodes ended (`EnvStep`): `NextStepEnvs` for a Gymnasium vector env, whose step after
an episode's end is a reset step to mask out, and `OneEnv`, which wraps a plain env as a vector
env of one copy that resets in the same step, with the fewest Python operations per step.
Evaluation and checkpoints are hooks (`Hooks`) that the caller (`qlearn.DQN`) builds; the loop
reports to a `Monitor` and keeps `Counters` current.

Counting: `step` counts real transitions summed over the env copies, and every interval is in
those steps, so `num_crossings` (not `%`) says whether one is due when the counter jumps.

Periodic checkpoints fall due every `checkpoint_interval` steps or `checkpoint_minutes` of
wall-clock time, and wait while writing them would take more than `checkpoint_max_overhead`
of the time. They read the clock but never an RNG, so they change what is on disk, never what
is learned.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import gymnasium as gym
import numpy as np

from qlearn import schedules
from qlearn.checkpoint import Counters
from qlearn.config import DQNConfig
from qlearn.errors import EnvError, QlearnError, TrainingError
from qlearn.monitor import Monitor
from qlearn.train.process import StopFlag

if TYPE_CHECKING:
    from qlearn.agents.dqn import DQNLearner

TRAIN_LOG_INTERVAL = 1_000  # env steps between train.csv rows and progress-bar refreshes
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the replay stores rewards as float32
NEXT_STEP = gym.vector.AutoresetMode.NEXT_STEP


def _checkpoint_clock() -> float:
    """Seconds on a monotonic clock, read by the wall-clock checkpoint rule (tests replace it)."""
    return time.monotonic()


class TrainingInterrupted(QlearnError):
    """SIGINT or SIGTERM stopped training; a checkpoint was saved first."""


@dataclasses.dataclass
class Hooks:
    """What the loop calls out to; each is optional."""

    evaluate: Callable[[int], bool] | None = None
    """Called with the step every `eval_interval` steps and at the last step (not when
    `eval_interval` is 0); returning True stops training early. Its time is not training time."""
    checkpoint: Callable[[], Path] | None = None
    """Writes a periodic checkpoint and returns where; called when one falls due, and on
    SIGINT/SIGTERM unless one was written at that very step."""


@dataclasses.dataclass
class LoopResult:
    """How a `train` call ended."""

    stopped_early: bool
    """The evaluation hook asked to stop."""
    checkpoint_step: int | None
    """The step of the last periodic checkpoint written in this call, or None."""


class EnvStep(NamedTuple):
    """One step of every env copy, as the loop stores and counts it."""

    obs: np.ndarray
    """(num_envs, *obs_shape) what the policy acts on next (the reset observation where an
    episode ended and the env resets in the same step)."""
    next_obs: np.ndarray
    """(num_envs, *obs_shape) where each transition ends: at an episode's end, the real final
    observation."""
    rewards: np.ndarray  # (num_envs,) float64, as the env gave them
    terminated: np.ndarray  # (num_envs,) bool
    truncated: np.ndarray  # (num_envs,) bool
    made: np.ndarray | None
    """(num_envs,) bool: which copies' step made a transition; None means all of them."""
    num_made: int  # transitions made
    episodes: list[tuple[float, int]]
    """(return, length) of each episode this step ended, in the order of the copies."""
    nonfinite: str | None
    """`observation` or `reward` when the env returned NaN/inf (or a reward beyond float32),
    where the adapter checks; else None."""


class OneEnv:
    """A plain `gymnasium.Env` as a vector env of one copy, resetting in the same step.

    Every step is a transition: where an episode ends, `next_obs` is the real final
    observation and `obs` the reset one (Gymnasium's same-step autoreset), so there is no
    reset step to mask. Episode statistics and the finite check are plain Python on scalars:
    this is the loop's fast path, a few microseconds per step. `EnvStep.rewards`, `terminated`
    and `truncated` are buffers of one element that the next step overwrites. Resets after the
    first are unseeded, as a vector env's copies are.

    Args:
        env: the env; `close` closes it.
        check_finite: check observations and rewards (not needed for uint8 images).
    """

    num_envs = 1

    def __init__(self, env: gym.Env, *, check_finite: bool = True) -> None:
        self.env = env
        self.check_finite = check_finite
        self.ep_return, self.ep_length = 0.0, 0
        self.rewards = np.zeros(1)
        self.terminated = np.zeros(1, dtype=np.bool_)
        self.truncated = np.zeros(1, dtype=np.bool_)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset with `seed`; returns (1, *obs_shape)."""
        obs, _ = self.env.reset(seed=seed)
        self.ep_return, self.ep_length = 0.0, 0
        return np.asarray(obs)[None]

    def step(self, actions: np.ndarray) -> EnvStep:
        """Step with `actions[0]`; reset at once where the episode ended."""
        next_obs, reward, terminated, truncated, _ = self.env.step(int(actions[0]))
        next_obs = np.asarray(next_obs)
        nonfinite = None
        if self.check_finite and not (abs(reward) <= FLOAT32_MAX and np.isfinite(next_obs).all()):
            nonfinite = _which_nonfinite(next_obs)
        self.ep_return += float(reward)
        self.ep_length += 1
        self.rewards[0], self.terminated[0], self.truncated[0] = reward, terminated, truncated
        next_obs = next_obs[None]
        obs, episodes = next_obs, []
        if terminated or truncated:
            episodes = [(self.ep_return, self.ep_length)]
            self.ep_return, self.ep_length = 0.0, 0
            obs = np.asarray(self.env.reset()[0])[None]
        # Positional: this runs at every step, and keywords cost a NamedTuple ~0.3 us more.
        return EnvStep(
            obs, next_obs, self.rewards, self.terminated, self.truncated, None, 1, episodes,
            nonfinite,
        )  # fmt: skip

    def close(self) -> None:
        self.env.close()


class NextStepEnvs:
    """A Gymnasium vector env with next-step autoreset (Gymnasium's default), for the loop.

    The step after an episode's end resets that copy and makes no transition: it is masked
    out of the replay memory and of the counts (`EnvStep.made`). Resets after the first are
    unseeded.

    Args:
        envs: the vector env; `close` closes it. Its autoreset mode must be next-step.
        check_finite: check observations and rewards (not needed for uint8 images).
    """

    def __init__(self, envs: gym.vector.VectorEnv, *, check_finite: bool = True) -> None:
        mode = envs.metadata.get("autoreset_mode", NEXT_STEP)
        if mode != NEXT_STEP:
            raise EnvError(
                f"vector env has autoreset_mode {mode}; allowed: {NEXT_STEP} (Gymnasium's default)"
            )
        self.envs = envs
        self.num_envs = envs.num_envs
        self.check_finite = check_finite
        self.ep_return = np.zeros(self.num_envs)
        self.ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self.ended = np.zeros(self.num_envs, dtype=np.bool_)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset copy i with `seed + i`; returns (num_envs, *obs_shape)."""
        obs, _ = self.envs.reset(seed=seed)
        self.ep_return[:] = 0.0
        self.ep_length[:] = 0
        self.ended[:] = False
        return obs

    def step(self, actions: np.ndarray) -> EnvStep:
        """Step every copy; those whose episode ended at the last step reset instead."""
        next_obs, rewards, terminated, truncated, _ = self.envs.step(actions)
        nonfinite = None
        if self.check_finite and not (
            np.isfinite(next_obs).all() and (np.abs(rewards) <= FLOAT32_MAX).all()
        ):
            nonfinite = _which_nonfinite(next_obs)
        made = ~self.ended
        done = terminated | truncated
        self.ep_return += np.where(made, rewards, 0.0)
        self.ep_length += made
        episodes = [
            (float(self.ep_return[i]), int(self.ep_length[i])) for i in np.flatnonzero(done & made)
        ]
        self.ep_return[done] = 0.0
        self.ep_length[done] = 0
        self.ended = done
        return EnvStep(
            next_obs,
            next_obs,
            rewards,
            terminated,
            truncated,
            made,
            int(made.sum()),
            episodes,
            nonfinite,
        )

    def close(self) -> None:
        self.envs.close()


def _which_nonfinite(next_obs: np.ndarray) -> str:
    return "observation" if not np.isfinite(np.asarray(next_obs)).all() else "reward"


def train(
    envs: OneEnv | NextStepEnvs,
    learner: DQNLearner,
    config: DQNConfig,
    counters: Counters,
    monitor: Monitor,
    *,
    hooks: Hooks | None = None,
    stop: StopFlag | None = None,
    env_name: str = "env",
) -> LoopResult:
    """Train from `counters.step` to `counters.target_step`, updating `counters` as it goes.

    Args:
        envs: the training envs, behind an adapter (`OneEnv`, `NextStepEnvs`); reset here with
            the seed `config.seed + counters.step`, so a resumed run does not replay its first
            episodes.
        learner: acts, holds the replay memory, and takes the gradient steps.
        config: the run's settings; the schedules run over its `total_steps`.
        counters: where training stands; `step`, `episodes`, `num_evals`, `wall_time` advance.
        monitor: receives episodes, train.csv rows and progress.
        hooks: evaluation and periodic checkpoints.
        stop: the flag SIGINT/SIGTERM set; when set, training stops after a checkpoint with
            TrainingInterrupted.
        env_name: names the env in the error for a non-finite observation or reward.

    Raises:
        TrainingError: the env returned a non-finite observation or reward (nothing of that
            step is stored or counted), or the learner diverged.
        TrainingInterrupted: SIGINT or SIGTERM arrived.
    """
    c, replay = config, learner.replay
    events = _Events(c, counters, monitor, hooks or Hooks(), stop or StopFlag())
    one_env = isinstance(envs, OneEnv)
    obs = envs.reset(seed=c.seed + counters.step)
    replay.reset_pending()  # the n-step windows of episodes a previous call left unfinished
    metrics: dict[str, float] = {}
    while counters.step < counters.target_step:
        epsilon = schedules.epsilon(c, counters.step)
        actions = learner.act(obs, epsilon)
        s = envs.step(actions)
        if s.nonfinite is not None:
            raise TrainingError(
                f"env {env_name!r} returned a non-finite {s.nonfinite} at step "
                f"{counters.step + 1}; check the env or wrap it to clean its output"
            )
        # Clipped before the n-step sums; the episode returns add the raw rewards.
        rewards = np.clip(s.rewards, -1.0, 1.0) if c.clip_rewards else s.rewards
        if one_env:  # the scalar path, ~5x faster than adding an array of one row
            replay.add_one(
                obs[0], int(actions[0]), float(rewards[0]), s.next_obs[0],
                bool(s.terminated[0]), bool(s.truncated[0]),
            )  # fmt: skip
        else:
            replay.add(obs, actions, rewards, s.next_obs, s.terminated, s.truncated, s.made)
        obs = s.obs
        before = counters.step
        step = counters.step = before + s.num_made
        for ret, length in s.episodes:
            events.episode(step, ret, length, epsilon)

        # Learn: gradient steps every train_interval steps, and target syncs.
        if step >= c.learning_starts:
            num_updates = schedules.num_crossings(before, step, c.train_interval)
            if num_updates:
                beta = schedules.per_beta(c, step) if c.prioritized else 1.0
                metrics = learner.update(num_updates * c.gradient_steps, beta) or metrics
            if schedules.num_crossings(before, step, c.target_update_interval):
                learner.sync_target()

        # Logs, evaluation, checkpoints and signals, when one falls due.
        if (step >= events.next_due or events.stop.signal is not None) and events.due(
            before, step, epsilon, metrics
        ):
            break
    return LoopResult(events.stopped_early, events.checkpoint_step)


class _Events:
    """What happens every so many steps rather than every step: train.csv rows and progress,
    evaluation, periodic checkpoints and signals. Also the episode log and `wall_time`."""

    def __init__(
        self,
        config: DQNConfig,
        counters: Counters,
        monitor: Monitor,
        hooks: Hooks,
        stop: StopFlag,
    ) -> None:
        self.config, self.counters, self.monitor = config, counters, monitor
        self.hooks, self.stop = hooks, stop
        self.recent_returns: list[float] = []
        self.t_start = time.perf_counter()
        self.wall_before = counters.wall_time
        self.eval_time = 0.0  # excluded from wall_time, which counts training only
        self.last_log = (counters.step, self.t_start)
        self.stopped_early = False
        self.next_due = self._next_due(counters.step)
        # Periodic checkpoints: when the last began (the run's start counts as one, for the
        # wall-clock trigger), how long it took, whether one is due, and its step.
        self.checkpoint_began = _checkpoint_clock()
        self.checkpoint_cost = 0.0
        self.checkpoint_due = False
        self.checkpoint_step: int | None = None
        self.checkpoint_path: Path | None = None

    def episode(self, step: int, ret: float, length: int, epsilon: float) -> None:
        self.counters.episodes += 1
        self.recent_returns.append(ret)
        del self.recent_returns[:-20]
        self.monitor.episode(step, self.counters.episodes, ret, length, epsilon=epsilon)

    def due(self, before: int, step: int, epsilon: float, metrics: dict[str, float]) -> bool:
        """Do what falls due in (before, step]; True ends training (the evaluation hook asked).

        Raises TrainingInterrupted after a checkpoint when a signal arrived.
        """
        c, counters, hooks = self.config, self.counters, self.hooks
        target = counters.target_step
        self.next_due = self._next_due(step)
        counters.wall_time = self.wall_before + time.perf_counter() - self.t_start
        counters.wall_time -= self.eval_time
        if schedules.num_crossings(before, step, TRAIN_LOG_INTERVAL) or step >= target:
            self._log(step, epsilon, metrics)
        if c.eval_interval and (
            schedules.num_crossings(before, step, c.eval_interval) or step >= target
        ):
            t_eval = time.perf_counter()
            stop_now = hooks.evaluate is not None and hooks.evaluate(step)
            self.eval_time += time.perf_counter() - t_eval
            if stop_now:
                self.stopped_early = True
                return True
        if hooks.checkpoint is not None and self._checkpoint_now(before, step):
            self._checkpoint(hooks.checkpoint)
        if self.stop.signal is not None:
            where = None
            if hooks.checkpoint is not None:  # one written at this very step is not written twice
                where = (
                    self.checkpoint_path
                    if self.checkpoint_step == step
                    else self._checkpoint(hooks.checkpoint)
                )
            name = signal.Signals(self.stop.signal).name
            saved = f"; checkpoint saved to {where}" if where else ""
            raise TrainingInterrupted(f"{name} at step {step}{saved}")
        return False

    def _checkpoint_now(self, before: int, step: int) -> bool:
        """Whether a periodic checkpoint is due at `step` and the overhead cap lets it be written.

        Due: `checkpoint_interval` was crossed in (before, step], or `checkpoint_minutes` have
        passed since the last checkpoint began. A due checkpoint stays due until written; it
        waits while the last one's cost exceeds `checkpoint_max_overhead` of the time since it
        began, so checkpoints take about that share of the run at most (the first of a run, with
        no cost measured yet, is never held back).
        """
        c = self.config
        since = _checkpoint_clock() - self.checkpoint_began
        if c.checkpoint_interval and schedules.num_crossings(before, step, c.checkpoint_interval):
            self.checkpoint_due = True
        if c.checkpoint_minutes and since >= 60.0 * c.checkpoint_minutes:
            self.checkpoint_due = True
        cap = c.checkpoint_max_overhead
        return self.checkpoint_due and (cap is None or self.checkpoint_cost <= cap * since)

    def _checkpoint(self, write: Callable[[], Path]) -> Path:
        """Write a periodic checkpoint, timing it for the overhead cap."""
        began = _checkpoint_clock()
        path = write()
        self.checkpoint_began, self.checkpoint_cost = began, _checkpoint_clock() - began
        self.checkpoint_due = False
        self.checkpoint_step, self.checkpoint_path = self.counters.step, path
        return path

    def _next_due(self, step: int) -> int:
        """The first step after `step` at which a log row, evaluation or checkpoint falls due."""
        c = self.config
        intervals = [TRAIN_LOG_INTERVAL, c.eval_interval, c.checkpoint_interval]
        due = [(step // i + 1) * i for i in intervals if i]
        return min([*due, self.counters.target_step])

    def _log(self, step: int, epsilon: float, metrics: dict[str, float]) -> None:
        last_step, last_time = self.last_log
        now = time.perf_counter()
        sps = (step - last_step) / max(now - last_time, 1e-9)
        self.last_log = (step, now)
        recent = self.recent_returns
        mean_return = float(np.mean(recent)) if recent else math.nan
        row = {
            "epsilon": epsilon,
            "steps_per_s": sps,
            "episodes": self.counters.episodes,
            "mean_return_20": mean_return,
            **metrics,
        }
        self.monitor.scalars(step, row)
        loss = metrics.get("loss", math.nan)
        self.monitor.progress(
            step, {"return (last 20)": mean_return, "epsilon": epsilon, "loss": loss}
        )
