"""DQN training end to end: replay contents under autoreset, every flag, determinism."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from qlearn import DQN, DQNConfig
from qlearn.errors import EnvError


class CounterEnv(gym.Env):
    """obs = steps taken in the episode; terminates at `terminate_at` if set (reward 1 a step)."""

    def __init__(self, terminate_at: int | None = None) -> None:
        self.observation_space = gym.spaces.Box(0, 100, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.terminate_at = terminate_at
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return np.array([float(self.t)], dtype=np.float32), 1.0, terminated, False, {}


gym.register("qlearn-test/Counter-v0", entry_point=CounterEnv, max_episode_steps=5)
gym.register(
    "qlearn-test/CounterTerminating-v0",
    entry_point=CounterEnv,
    kwargs={"terminate_at": 3},
    max_episode_steps=5,
)

TINY = DQNConfig(
    total_steps=23,
    learning_starts=1000,
    buffer_size=100,
    eval_interval=0,
    hidden_sizes=(8,),
)


@pytest.mark.parametrize("num_envs", [1, 3])
def test_truncation_stores_the_real_final_observation(num_envs: int) -> None:
    agent = DQN("qlearn-test/Counter-v0", TINY.replace(num_envs=num_envs))
    agent.learn()
    replay = agent.agent.replay
    n = len(replay)
    assert n == agent.counters.step >= 23
    obs, nxt = replay.obs[:n, 0], replay.next_obs[:n, 0]
    np.testing.assert_array_equal(nxt, obs + 1)  # no reset observation ever stored as next
    assert not replay.terminated[:n].any()  # truncation is not termination
    assert set(obs.tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}


@pytest.mark.parametrize("num_envs", [1, 2])
def test_termination_is_stored_and_episodes_counted(num_envs: int) -> None:
    agent = DQN("qlearn-test/CounterTerminating-v0", TINY.replace(num_envs=num_envs))
    agent.learn(30)
    replay = agent.agent.replay
    n = len(replay)
    assert n == 30
    np.testing.assert_array_equal(replay.terminated[:n], replay.next_obs[:n, 0] == 3)
    assert agent.counters.episodes == 10  # 30 steps of 3-step episodes


def test_nstep_transitions_in_vector_envs() -> None:
    cfg = TINY.replace(num_envs=2, n_step=3, gamma=0.5)
    agent = DQN("qlearn-test/CounterTerminating-v0", cfg)
    agent.learn(30)
    replay = agent.agent.replay
    n = len(replay)
    # From obs t an n-step transition covers k = min(3, 3 - t) steps up to the terminal state.
    obs = replay.obs[:n, 0]
    k = np.minimum(3, 3 - obs).astype(int)
    np.testing.assert_array_equal(replay.steps[:n], k)
    np.testing.assert_allclose(replay.rewards[:n], [sum(0.5**i for i in range(j)) for j in k])
    assert replay.terminated[:n].all()
    np.testing.assert_array_equal(replay.next_obs[:n, 0], 3)


FLAGS = [
    {},
    {"double_q": True, "dueling": True},
    {"prioritized": True, "n_step": 3},
    {"noisy": True},
    {"distributional": "c51", "v_min": 0.0, "v_max": 100.0},
    {"distributional": "qr", "num_atoms": 16},
    {"exploration": "softmax", "temperature": 0.5},
    {"num_envs": 4, "tau": 0.05, "loss": "mse", "max_grad_norm": None},
    {"init": "orthogonal", "log_grad_norms": True, "tensorboard": True},
]


@pytest.mark.parametrize("flags", FLAGS, ids=[",".join(f) or "default" for f in FLAGS])
def test_every_flag_trains_saves_and_loads(flags: dict, tmp_path) -> None:
    cfg = DQNConfig(
        total_steps=1500,
        learning_starts=200,
        batch_size=32,
        eval_interval=750,
        eval_episodes=2,
        target_update_interval=100,
        hidden_sizes=(32, 32),
        **flags,
    )
    agent = DQN("CartPole-v1", cfg, run_dir=tmp_path / "run")
    agent.learn()
    assert 1500 <= agent.counters.step < 1500 + cfg.num_envs
    assert agent.agent.num_updates > 0
    rows = (tmp_path / "run" / "evals.csv").read_text().splitlines()
    assert len(rows) == 1 + 2
    loaded = DQN.load(tmp_path / "run" / "final")
    obs = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs), agent.predict(obs))
    assert isinstance(agent.predict(obs[0]), int)
    if flags.get("tensorboard"):
        assert any((tmp_path / "run" / "tb").iterdir())
    if flags.get("log_grad_norms"):
        header = (tmp_path / "run" / "train.csv").read_text().splitlines()[0]
        assert "grad_norm/body.0" in header


def test_same_seed_one_thread_is_identical() -> None:
    torch.set_num_threads(1)
    cfg = DQNConfig(total_steps=1200, learning_starts=100, eval_interval=0, hidden_sizes=(16,))
    runs = []
    for _ in range(2):
        agent = DQN("CartPole-v1", cfg)
        agent.learn()
        runs.append(agent.agent.tensors())
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key
    other = DQN("CartPole-v1", cfg.replace(seed=1))
    other.learn()
    assert not torch.equal(
        other.agent.tensors()["q_net.body.0.weight"], runs[0]["q_net.body.0.weight"]
    )


def test_discrete_observations_are_one_hot() -> None:
    cfg = DQNConfig(total_steps=600, learning_starts=100, eval_interval=0, hidden_sizes=(16,))
    agent = DQN("FrozenLake-v1", cfg)
    agent.learn()
    assert agent.agent.replay.obs.dtype == np.int64
    assert agent.agent.q_net.body[0].in_features == 16
    assert 0 <= agent.predict(5) < 4


def test_env_instance_and_bad_envs() -> None:
    env = gym.make("CartPole-v1")
    agent = DQN(env, DQNConfig(total_steps=300, learning_starts=100, eval_interval=0))
    agent.learn()
    assert agent.evaluate(2).mean_return > 0
    with pytest.raises(EnvError, match="action space Box"):
        DQN("Pendulum-v1")
    with pytest.raises(EnvError, match="unknown env id 'CartPol-v1'; did you mean 'CartPole-v1'"):
        DQN("CartPol-v1")


@pytest.mark.slow
def test_cartpole_preset_learns_with_a_fixed_seed() -> None:
    """A short run of the cartpole preset: measured best evaluation 500.0 at 15k steps, seed 2
    (500.0 with the torch engine too; DQN on CartPole is chaotic, so seed 1 gives 427.8 with
    torch and 236.1 with numpy, whose floats differ in the last bit)."""
    from qlearn.presets import load_preset

    torch.set_num_threads(1)
    cfg = load_preset("cartpole").replace(
        total_steps=15_000, eval_interval=2_500, eval_episodes=10, seed=2
    )
    agent = DQN("CartPole-v1", cfg)
    agent.learn()
    assert agent.counters.best_eval >= 300


def test_denormals_flush_during_training_only() -> None:
    tiny = np.full(4, 1e-40, dtype=np.float32)  # a denormal float32

    def during(agent: DQN, metrics: dict) -> None:
        seen.append(float((tiny * np.float32(1.0)).max()))

    seen: list[float] = []
    cfg = DQNConfig(total_steps=300, learning_starts=100, eval_interval=150, eval_episodes=1)
    DQN("CartPole-v1", cfg).learn(callback=during)
    assert seen and all(value == 0.0 for value in seen)
    assert float((tiny * np.float32(1.0)).max()) > 0.0  # the CPU's default is back
