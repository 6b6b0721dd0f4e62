"""ChainEnv: its exported model against hand-computed values, and its steps against that model."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from qlearn.envs import CHAIN_ID, ChainEnv, make_env
from qlearn.errors import ConfigError, EnvError
from qlearn.planning import TabularMDP, value_iteration

LEFT, RIGHT = 0, 1


def test_default_chain_q_star_is_gamma_to_the_distance() -> None:
    # 7 cells, reward 1 for entering cell 6. From inner cell s the reward is 6 - s steps away
    # going right, so Q*(s, right) = 0.9^(5 - s); going left first costs two more steps.
    result = value_iteration(TabularMDP.from_env(ChainEnv()), gamma=0.9)
    q = result.q_values
    np.testing.assert_allclose(q[1:6, RIGHT], [0.9**4, 0.9**3, 0.9**2, 0.9, 1.0], atol=1e-9)
    np.testing.assert_allclose(q[2:6, LEFT], [0.9**5, 0.9**4, 0.9**3, 0.9**2], atol=1e-9)
    assert q[1, LEFT] == 0.0  # entering cell 0 ends the episode with reward 0
    assert q[5, RIGHT] == pytest.approx(1.0)
    np.testing.assert_array_equal(q[[0, 6]], 0.0)  # terminal cells
    np.testing.assert_array_equal(result.policy[1:6], RIGHT)


def test_left_reward_beats_the_far_goal_only_when_it_is_worth_more() -> None:
    # Cell 1 is 5 steps from the right end: going right is worth 0.9^4 = 0.6561.
    q = value_iteration(TabularMDP.from_env(ChainEnv(left_reward=0.5)), gamma=0.9).q_values
    assert q[1, LEFT] == pytest.approx(0.5)
    assert q[2, LEFT] == pytest.approx(0.9 * 0.9**4)  # via cell 1, which still goes right
    q = value_iteration(TabularMDP.from_env(ChainEnv(left_reward=0.7)), gamma=0.9).q_values
    assert q[1].argmax() == LEFT
    assert q[2, LEFT] == pytest.approx(0.9 * 0.7)


def test_model_marks_both_ends_terminal_and_moves_one_cell() -> None:
    mdp = TabularMDP.from_env(ChainEnv(5))
    np.testing.assert_array_equal(mdp.terminal, [True, False, False, False, True])
    for s in (1, 2, 3):
        assert mdp.P[s, LEFT, s - 1] == 1.0
        assert mdp.P[s, RIGHT, s + 1] == 1.0
    np.testing.assert_array_equal(mdp.R[1:4], [[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])


def test_slip_moves_the_other_way_and_the_model_averages_the_rewards() -> None:
    mdp = TabularMDP.from_env(ChainEnv(5, left_reward=-1.0, right_reward=2.0, slip=0.25))
    assert mdp.P[3, RIGHT, 4] == 0.75 and mdp.P[3, RIGHT, 2] == 0.25
    assert mdp.R[3, RIGHT] == pytest.approx(0.75 * 2.0)
    assert mdp.R[1, RIGHT] == pytest.approx(0.25 * -1.0)  # slips into the left end
    assert mdp.R[1, LEFT] == pytest.approx(0.75 * -1.0)
    # With gamma = 1 the best policy always moves right: the gambler's ruin with p = 0.75 on
    # cells 0..4 reaches cell 4 from cell 2 with probability (1 - (1/3)^2) / (1 - (1/3)^4) = 0.9.
    v = value_iteration(mdp, gamma=1.0).values
    assert v[2] == pytest.approx(0.9 * 2.0 + 0.1 * -1.0)


def test_steps_follow_the_model_and_starts_are_inner_cells() -> None:
    env = ChainEnv()
    starts = {env.reset(seed=seed)[0] for seed in range(50)}
    assert starts == {1, 2, 3, 4, 5}
    env.state = 5
    assert env.step(RIGHT) == (6, 1.0, True, False, {})
    env.state = 2
    assert env.step(LEFT) == (1, 0.0, False, False, {})
    assert ChainEnv(start_state=3).reset(seed=0)[0] == 3


def test_slipping_steps_match_the_model_frequencies() -> None:
    env = ChainEnv(slip=0.2)
    env.reset(seed=0)
    moved_left = 0
    for _ in range(5000):
        env.state = 3
        moved_left += env.step(RIGHT)[0] == 2
    assert moved_left / 5000 == pytest.approx(0.2, abs=0.02)  # 4 standard errors


def test_seeded_resets_repeat_the_same_episode() -> None:
    def episode(seed: int) -> list[int]:
        env = ChainEnv(slip=0.3)
        states = [env.reset(seed=seed)[0]]
        for _ in range(20):
            s, _, terminated, _, _ = env.step(RIGHT)
            states.append(s)
            if terminated:
                break
        return states

    assert episode(3) == episode(3)


def test_registered_id_truncates_at_fifty_steps_and_passes_the_gymnasium_checker() -> None:
    env = make_env(CHAIN_ID)
    assert isinstance(env, gym.wrappers.TimeLimit)
    env.reset(seed=0)
    env.unwrapped.state = 3
    for t in range(1, 51):
        # Alternating moves never reach an end, so only the time limit stops the episode.
        _, _, terminated, truncated, _ = env.step(t % 2)
        assert not terminated
        assert truncated == (t == 50)
    check_env(ChainEnv(slip=0.1), skip_render_check=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_states": 2}, "num_states = 2 is out of range"),
        ({"num_states": 4.0}, "num_states = 4.0 is invalid"),
        ({"slip": 1.0}, "slip = 1.0 is out of range"),
        ({"right_reward": float("nan")}, "right_reward = nan is out of range"),
        ({"start_state": 0}, "start_state = 0 is invalid; allowed: None"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ChainEnv(**kwargs)  # type: ignore[arg-type]


def test_render_modes_are_refused() -> None:
    with pytest.raises(EnvError, match="render_mode = 'human'"):
        ChainEnv(render_mode="human")
