"""NStepAccumulator against hand-computed windows and a brute-force n-step computation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qlearn.errors import ConfigError, TrainingError
from qlearn.replay import NStepAccumulator, NStepOut, make_memory


def one_env_step(
    acc: NStepAccumulator,
    t: int,
    reward: float,
    terminated: bool = False,
    truncated: bool = False,
) -> NStepOut | None:
    """Push step t of a single env whose observation at time t is [t]."""
    return acc.push(
        np.array([[t]], dtype=np.float32),
        np.array([t % 2]),
        np.array([reward]),
        np.array([[t + 1]], dtype=np.float32),
        np.array([terminated]),
        np.array([truncated]),
    )


def rows(out: NStepOut | None) -> list[tuple]:
    if out is None:
        return []
    return [
        (float(o[0]), float(r), float(no[0]), bool(term), int(k))
        for o, r, no, term, k in zip(
            out.obs, out.returns, out.next_obs, out.terminated, out.steps, strict=True
        )
    ]


def test_three_step_windows_then_termination_flush() -> None:
    acc = NStepAccumulator(3, 0.5, num_envs=1)
    assert one_env_step(acc, 0, 1.0) is None
    assert one_env_step(acc, 1, 2.0) is None
    # (obs, return, next_obs, terminated, steps)
    assert rows(one_env_step(acc, 2, 3.0)) == [(0.0, 1 + 0.5 * 2 + 0.25 * 3, 3.0, False, 3)]
    assert rows(one_env_step(acc, 3, 4.0)) == [(1.0, 2 + 0.5 * 3 + 0.25 * 4, 4.0, False, 3)]
    # Step 4 terminates: the pending steps 2, 3, 4 all leave, cut at the end, without bootstrap.
    assert rows(one_env_step(acc, 4, 5.0, terminated=True)) == [
        (2.0, 3 + 0.5 * 4 + 0.25 * 5, 5.0, True, 3),
        (3.0, 4 + 0.5 * 5, 5.0, True, 2),
        (4.0, 5.0, 5.0, True, 1),
    ]
    assert acc.num_pending == 0


def test_truncation_flushes_and_bootstraps_from_the_final_observation() -> None:
    acc = NStepAccumulator(3, 0.5, num_envs=1)
    one_env_step(acc, 0, 1.0)
    out = one_env_step(acc, 1, 2.0, truncated=True)
    # Not terminated: the target will add γ^steps V(final obs [2]).
    assert rows(out) == [(0.0, 1 + 0.5 * 2, 2.0, False, 2), (1.0, 2.0, 2.0, False, 1)]


def test_n_equal_one_passes_transitions_straight_through() -> None:
    acc = NStepAccumulator(1, 0.9, num_envs=3)
    obs = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = acc.push(
        obs,
        np.array([0, 1, 2]),
        np.array([1.0, 2.0, 3.0]),
        obs + 10,
        np.array([False, True, False]),
        np.array([False, False, True]),
        mask=np.array([True, True, False]),
    )
    assert out is not None
    np.testing.assert_array_equal(out.obs, obs[:2])
    np.testing.assert_array_equal(out.next_obs, obs[:2] + 10)
    np.testing.assert_array_equal(out.actions, [0, 1])
    np.testing.assert_array_equal(out.returns, [1.0, 2.0])
    np.testing.assert_array_equal(out.terminated, [False, True])
    np.testing.assert_array_equal(out.steps, [1, 1])
    assert acc.num_pending == 0


def test_masked_rows_are_ignored_entirely() -> None:
    acc = NStepAccumulator(2, 0.9, num_envs=2)
    obs = np.zeros((2, 1), dtype=np.float32)
    done = np.array([True, True])  # the masked env's flags must not flush anything either
    out = acc.push(obs, np.zeros(2), np.ones(2), obs, done, done, mask=np.array([False, False]))
    assert out is None and acc.num_pending == 0


def test_reset_drops_pending_transitions() -> None:
    acc = NStepAccumulator(3, 0.5, num_envs=1)
    one_env_step(acc, 0, 1.0)
    one_env_step(acc, 1, 1.0)
    assert acc.num_pending == 2
    acc.reset()
    assert acc.num_pending == 0
    assert one_env_step(acc, 10, 1.0) is None  # a fresh window: nothing stale comes out
    assert rows(one_env_step(acc, 11, 1.0, terminated=True))[0][0] == 10.0


def test_output_feeds_the_replay_buffer() -> None:
    acc = NStepAccumulator(3, 0.5, num_envs=1)
    one_env_step(acc, 0, 1.0)
    out = one_env_step(acc, 1, 2.0, truncated=True)
    assert out is not None
    buffer = make_memory(8, (1,), np.float32, 2, gamma=0.5)
    slots = buffer.add_transitions(*out.as_add_args())
    batch = buffer.gather(slots)
    np.testing.assert_allclose(batch.returns, [2.0, 2.0])
    np.testing.assert_allclose(batch.discounts, [0.25, 0.5])  # γ^2 and γ^1
    np.testing.assert_array_equal(batch.terminated, [0.0, 0.0])


def test_errors_name_the_bad_value() -> None:
    with pytest.raises(ConfigError, match="n_step = 0"):
        NStepAccumulator(0, 0.9, 1)
    with pytest.raises(ConfigError, match=r"gamma = 1\.5"):
        NStepAccumulator(2, 1.5, 1)
    acc = NStepAccumulator(2, 0.9, num_envs=2)
    with pytest.raises(TrainingError, match=r"rewards has shape \(3,\).*num_envs = 2"):
        acc.push(np.zeros((2, 1)), np.zeros(2), np.zeros(3), np.zeros((2, 1)), [0, 0], [0, 0])


# --- brute force over random episodes -----------------------------------------------------------

END_KINDS = ("terminated", "truncated", "open")


@dataclasses.dataclass
class Episode:
    rewards: np.ndarray  # (length,)
    end: str  # one of END_KINDS; only an env's last episode may be "open"


@st.composite
def schedules(draw: st.DrawFn) -> dict:
    num_envs = draw(st.integers(1, 4))
    n = draw(st.integers(1, 5))
    gamma = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    envs = []
    for _ in range(num_envs):
        episodes = []
        num_episodes = draw(st.integers(0, 4))
        for e in range(num_episodes):
            length = draw(st.integers(1, 8))
            kinds = END_KINDS if e == num_episodes - 1 else END_KINDS[:2]
            end = draw(st.sampled_from(kinds))
            episodes.append(Episode(rng.normal(size=length).round(3), end))
        envs.append(episodes)
    return {"n": n, "gamma": gamma, "envs": envs, "seed": int(rng.integers(2**31))}


def env_timeline(episodes: list[Episode], rng: np.random.Generator) -> list[tuple[int, int] | None]:
    """Per tick: (episode, t) for a real step, None for a skipped one.

    After each ended episode comes the autoreset step (no transition); idle skips are sprinkled
    in at random to interleave the envs differently.
    """
    timeline: list[tuple[int, int] | None] = []
    for e, episode in enumerate(episodes):
        for t in range(len(episode.rewards)):
            while rng.random() < 0.2:
                timeline.append(None)
            timeline.append((e, t))
        if episode.end != "open":
            timeline.append(None)  # the reset step of next-step autoreset
    return timeline


def brute_force(case: dict, timelines: list[list]) -> list[list[tuple]]:
    """For every step of every episode, the n-step transition it should become, directly."""
    n, gamma = case["n"], case["gamma"]
    expected = []
    for env, episodes in enumerate(case["envs"]):
        tick_of = {step: tick for tick, step in enumerate(timelines[env]) if step is not None}
        rows_ = []
        for e, episode in enumerate(episodes):
            length = len(episode.rewards)
            for t in range(length):
                if episode.end == "open" and t + n > length:
                    continue  # its window never completes
                k = min(n, length - t)
                ret = sum(gamma**i * episode.rewards[t + i] for i in range(k))
                terminated = episode.end == "terminated" and t + k == length
                # (obs, action, return, next_obs, terminated, steps, tick emitted)
                rows_.append(
                    (
                        (env, e, t),
                        (7 * t + env) % 5,
                        ret,
                        (env, e, t + k),
                        terminated,
                        k,
                        tick_of[(e, t + k - 1)],
                    )
                )
        expected.append(rows_)
    return expected


@settings(max_examples=150, deadline=None)
@given(schedules())
def test_matches_brute_force_over_random_episodes(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    envs = case["envs"]
    num_envs = len(envs)
    timelines = [env_timeline(episodes, rng) for episodes in envs]
    num_ticks = max(len(tl) for tl in timelines)
    acc = NStepAccumulator(case["n"], case["gamma"], num_envs)

    emitted: list[list[tuple]] = [[] for _ in range(num_envs)]
    for tick in range(num_ticks):
        # Garbage in the masked rows, terminated and truncated included: it must be ignored.
        obs = rng.normal(size=(num_envs, 3)).astype(np.float32)
        next_obs = rng.normal(size=(num_envs, 3)).astype(np.float32)
        actions = rng.integers(0, 5, num_envs)
        rewards = rng.normal(size=num_envs) * 100
        terminated = rng.random(num_envs) < 0.5
        truncated = rng.random(num_envs) < 0.5
        mask = np.zeros(num_envs, dtype=bool)
        for env, timeline in enumerate(timelines):
            step = timeline[tick] if tick < len(timeline) else None
            if step is None:
                continue
            e, t = step
            episode = envs[env][e]
            last = t == len(episode.rewards) - 1
            mask[env] = True
            obs[env] = (env, e, t)
            next_obs[env] = (env, e, t + 1)  # at the end: the real final observation
            actions[env] = (7 * t + env) % 5
            rewards[env] = episode.rewards[t]
            terminated[env] = last and episode.end == "terminated"
            truncated[env] = last and episode.end == "truncated"
        out = acc.push(obs, actions, rewards, next_obs, terminated, truncated, mask)
        if out is None:
            continue
        env_ids = out.obs[:, 0].astype(int)
        assert (np.diff(env_ids) >= 0).all(), "outputs are grouped by env"
        for o, a, r, no, term, k in zip(
            out.obs, out.actions, out.returns, out.next_obs, out.terminated, out.steps, strict=True
        ):
            emitted[int(o[0])].append(
                (tuple(o.astype(int)), int(a), r, tuple(no.astype(int)), bool(term), int(k), tick)
            )

    expected = brute_force(case, timelines)
    for env in range(num_envs):
        got, want = emitted[env], expected[env]
        assert len(got) == len(want), f"env {env}: {len(got)} transitions, expected {len(want)}"
        for g, w in zip(got, want, strict=True):
            assert g[:2] == w[:2] and g[3:] == w[3:], f"env {env}: {g} != {w}"
            assert g[2] == pytest.approx(w[2], rel=1e-5, abs=1e-5)
    # What is still pending is exactly the open episodes' incomplete windows.
    open_pending = sum(
        min(case["n"] - 1, len(eps[-1].rewards)) for eps in envs if eps and eps[-1].end == "open"
    )
    assert acc.num_pending == open_pending
