"""DQN training end to end: replay contents under autoreset, every flag, determinism."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from qlearn import DQN, DQNConfig, schedules
from qlearn.errors import ConfigError, EnvError


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
    replay = agent.learner.replay.storage
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
    replay = agent.learner.replay.storage
    n = len(replay)
    assert n == 30
    np.testing.assert_array_equal(replay.terminated[:n], replay.next_obs[:n, 0] == 3)
    assert agent.counters.episodes == 10  # 30 steps of 3-step episodes


def test_nstep_transitions_in_vector_envs() -> None:
    cfg = TINY.replace(num_envs=2, n_step=3, gamma=0.5)
    agent = DQN("qlearn-test/CounterTerminating-v0", cfg)
    agent.learn(30)
    replay = agent.learner.replay.storage
    n = len(replay)
    # From obs t an n-step transition covers k = min(3, 3 - t) steps up to the terminal state.
    obs = replay.obs[:n, 0]
    k = np.minimum(3, 3 - obs).astype(int)
    np.testing.assert_array_equal(replay.steps[:n], k)
    np.testing.assert_allclose(replay.returns[:n], [sum(0.5**i for i in range(j)) for j in k])
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
    assert agent.learner.num_updates > 0
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
        runs.append(agent.learner.tensors())
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key
    other = DQN("CartPole-v1", cfg.replace(seed=1))
    other.learn()
    assert not torch.equal(
        other.learner.tensors()["q_net.body.0.weight"], runs[0]["q_net.body.0.weight"]
    )


def test_discrete_observations_are_one_hot() -> None:
    cfg = DQNConfig(total_steps=600, learning_starts=100, eval_interval=0, hidden_sizes=(16,))
    agent = DQN("FrozenLake-v1", cfg)
    agent.learn()
    assert agent.learner.replay.storage.obs.dtype == np.int64
    assert agent.learner.q_net.body[0].in_features == 16
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
    """A short run of the cartpole preset: measured best evaluation 500.0 at 15k steps, seed 1.
    DQN on CartPole is chaotic: seeds 0-7 gave 284.8, 500, 177.7, 500, 216.2, 500, 500, 500
    (with a uniform random warm-up; 5 of 8 reached 500 before it too, other seeds)."""
    from qlearn.presets import load_preset

    torch.set_num_threads(1)
    cfg = load_preset("cartpole").replace(
        total_steps=15_000, eval_interval=2_500, eval_episodes=10, seed=1
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


# ---------------------------------------------------------------------- warm-up exploration

WARM_UP = [
    # Before: noise drawn once and never redrawn before the first update, so the warm-up
    # followed one deterministic policy (seed 1: action 0 at all 1,000 steps).
    {"noisy": True, "seed": 1},
    {"noisy": True, "seed": 1, "num_envs": 3},
    # Before: a near-greedy softmax (815 and 185).
    {"exploration": "softmax", "temperature": 0.01},
    # Before: epsilon at its floor of 0.05 from step 100 on (829 and 171).
    {"exploration_fraction": 0.05},
]


@pytest.mark.parametrize("flags", WARM_UP, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_warm_up_acts_uniformly_at_random(flags: dict) -> None:
    """Every variant fills the replay with uniform random actions until learning_starts."""
    cfg = DQNConfig(total_steps=2_000, learning_starts=1_000, eval_interval=0, **flags)
    agent = DQN("CartPole-v1", cfg)
    agent.learn(1_000)
    counts = np.bincount(agent.learner.replay.storage.actions[:1_000], minlength=2)
    # Binomial(1000, 1/2) has sd 15.8: 400 is 6.3 sd below its mean.
    assert counts.min() >= 400, counts


# ---------------------------------------------------------------------- reward clipping


class RewardEnv(gym.Env):
    """obs = steps taken; rewards 5, -3, 0.5, 1 in turn; terminates after 4 steps."""

    REWARDS = (5.0, -3.0, 0.5, 1.0)

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 100, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        reward = self.REWARDS[self.t]
        self.t += 1
        obs = np.array([float(self.t)], dtype=np.float32)
        return obs, reward, self.t == len(self.REWARDS), False, {}


gym.register("qlearn-test/Rewards-v0", entry_point=RewardEnv)


@pytest.mark.parametrize(
    ("num_envs", "n_step", "clip"),
    [(1, 1, True), (2, 1, True), (2, 3, True), (1, 3, True), (1, 1, False)],
)
def test_clip_rewards_clips_what_the_replay_stores_only(
    num_envs: int, n_step: int, clip: bool, tmp_path
) -> None:
    cfg = TINY.replace(num_envs=num_envs, n_step=n_step, gamma=0.5, clip_rewards=clip)
    agent = DQN("qlearn-test/Rewards-v0", cfg, run_dir=tmp_path / "run")
    agent.learn(24)
    replay = agent.learner.replay.storage
    n = len(replay)
    assert n > 0
    raw = np.array(RewardEnv.REWARDS)
    per_step = np.clip(raw, -1, 1) if clip else raw  # 1, -1, 0.5, 1 when clipped
    t = replay.obs[:n, 0].astype(int)
    k = np.minimum(n_step, 4 - t)  # steps each transition covers, up to the terminal one
    expected = [sum(0.5**i * per_step[s + i] for i in range(j)) for s, j in zip(t, k, strict=True)]
    np.testing.assert_allclose(replay.returns[:n], expected)
    episodes = (tmp_path / "run" / "episodes.csv").read_text().splitlines()
    header = episodes[0].split(",")
    returns = {float(row.split(",")[header.index("return")]) for row in episodes[1:]}
    assert returns == {3.5}  # 5 - 3 + 0.5 + 1, unclipped (clipped it would be 1.5)


def test_atari_preset_clips_rewards() -> None:
    from qlearn.presets import load_preset

    assert load_preset("atari").clip_rewards
    assert not DQNConfig().clip_rewards


# ---------------------------------------------------------------------- learn(n)


REAL_EPSILON = schedules.epsilon


def recording(agent: DQN, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple[int, float]]]:
    """Record (step, epsilon) each time the loop asks for epsilon, and (step, beta) of each
    round of updates, until the next `recording` call."""
    seen: dict[str, list[tuple[int, float]]] = {"epsilon": [], "beta": []}
    learner = agent.learner
    epsilon, train = REAL_EPSILON, learner.update

    def record_epsilon(config: DQNConfig, step: int) -> float:
        seen["epsilon"].append((step, epsilon(config, step)))
        return seen["epsilon"][-1][1]

    def record_train(num_updates: int, beta: float = 1.0) -> dict[str, float]:
        seen["beta"].append((agent.counters.step, beta))
        return train(num_updates, beta)

    monkeypatch.setattr(schedules, "epsilon", record_epsilon)
    learner.update = record_train  # type: ignore[method-assign]
    return seen


SPLIT = TINY.replace(
    total_steps=400,
    learning_starts=100,
    train_interval=10,
    batch_size=8,
    buffer_size=1_000,
    exploration_fraction=0.5,
    prioritized=True,
)


@pytest.mark.parametrize("num_envs", [1, 2])
def test_learn_n_adds_n_steps_and_schedules_span_the_planned_total(
    num_envs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """learn(200) twice runs 400 steps with the epsilons and PER betas of learn(400) once."""
    cfg = SPLIT.replace(num_envs=num_envs)
    whole = DQN("qlearn-test/Counter-v0", cfg)
    whole_seen = recording(whole, monkeypatch)
    whole.learn(400)
    split = DQN("qlearn-test/Counter-v0", cfg)
    split_seen = recording(split, monkeypatch)
    split.learn(200)
    assert split.counters.step == 200
    split.learn(200)
    assert split.counters.step == whole.counters.step == 400
    assert split.learner.num_updates == whole.learner.num_updates > 0
    if num_envs == 1:
        assert split_seen == whole_seen
    else:
        # Autoreset steps make the step sequence depend on where the env was reset: compare
        # the schedules at the steps both runs visited.
        for name in ("epsilon", "beta"):
            a, b = dict(whole_seen[name]), dict(split_seen[name])
            common = a.keys() & b.keys()
            assert len(common) > len(a) // 2
            assert all(a[k] == b[k] for k in common), name
    # 1 in the warm-up (steps 0-99), then the line from 1 at step 0 to 0.05 at step 200
    # (exploration_fraction 0.5 of the planned 400 steps), then 0.05.
    for step, epsilon in whole_seen["epsilon"]:
        expected = 1.0 if step < 100 else max(0.05, 1.0 - 0.95 * step / 200)
        assert epsilon == pytest.approx(expected), step
    last_step, last_beta = whole_seen["beta"][-1]
    assert last_beta == pytest.approx(0.4 + 0.6 * last_step / 400)


def test_learn_without_steps_runs_to_the_planned_total_once() -> None:
    agent = DQN("qlearn-test/Counter-v0", SPLIT)
    agent.learn()
    assert agent.counters.step == SPLIT.total_steps
    agent.learn()  # already there: nothing to do
    assert agent.counters.step == SPLIT.total_steps
    agent.learn(30)  # beyond the plan, with the schedules at their ends
    assert agent.counters.step == SPLIT.total_steps + 30
    with pytest.raises(ConfigError, match="steps = 0 is invalid"):
        agent.learn(0)


# ---------------------------------------------------------------------- evaluation seeds


def test_final_evaluation_is_on_held_out_episodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The periodic evaluations pick the best model, so the default evaluation must not replay
    their episodes."""
    import qlearn.train.dqn as train_dqn

    seeds: list[int] = []
    run_episodes = train_dqn.run_episodes

    def recording(env, act, num_episodes, seed, **kwargs):  # type: ignore[no-untyped-def]
        seeds.append(seed)
        return run_episodes(env, act, num_episodes, seed, **kwargs)

    monkeypatch.setattr(train_dqn, "run_episodes", recording)
    cfg = DQNConfig(total_steps=400, learning_starts=100, eval_interval=100, eval_episodes=1)
    agent = DQN("CartPole-v1", cfg)
    agent.learn()
    periodic = list(seeds)
    assert len(set(periodic)) == 4
    agent.evaluate(2)
    assert seeds[-1] not in periodic
