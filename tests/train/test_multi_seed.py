"""Multi-seed training: seed k of a batch equals a single run of seed k."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from qlearn import DQN, DQNConfig
from qlearn.train.multi_seed import MultiSeedDQN

# 1,000 updates: one every 4 steps from step 200 to step 4196.
SMALL = DQNConfig(
    total_steps=4199,
    hidden_sizes=(64, 64),
    learning_starts=200,
    train_interval=4,
    target_update_interval=100,
    batch_size=32,
    buffer_size=5_000,
    exploration_fraction=0.5,
    max_grad_norm=10.0,
    eval_interval=0,
    checkpoint_interval=0,
    checkpoint_minutes=0,
)
NUM_UPDATES = 1000


class RecordActions(gym.Wrapper):
    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.actions: list[int] = []

    def step(self, action):
        self.actions.append(int(action))
        return self.env.step(action)


def single_run(config: DQNConfig) -> tuple[list[int], dict[str, torch.Tensor], int]:
    env = RecordActions(gym.make("CartPole-v1"))
    agent = DQN(env, config)
    agent.learn()
    return env.actions, agent.learner.tensors(), agent.learner.num_updates


def multi_run(config: DQNConfig, num_seeds: int) -> tuple[MultiSeedDQN, np.ndarray]:
    runs = MultiSeedDQN("CartPole-v1", config, num_seeds=num_seeds)
    actions: list[np.ndarray] = []
    act = runs.learner.act

    def recording_act(obs, epsilon):
        out = act(obs, epsilon)
        actions.append(out.copy())
        return out

    runs.learner.act = recording_act  # type: ignore[method-assign]
    runs.learn()
    return runs, np.array(actions)  # (steps, num_seeds)


# Plain MLP variants run on the stacked numpy engine, bit for bit the single numpy engine's
# arithmetic (tolerance zero). Dueling runs on the torch.func engine, whose batched products round
# differently from the single torch engine's: weights within 1e-4 (float32 noise accumulated
# over the updates), actions still identical at every step.
VARIANTS = {
    "double": {"double_q": True},
    "per_nstep": {"prioritized": True, "n_step": 3},
    "dueling": {"dueling": True, "total_steps": 1199},  # torch: fewer updates (250) keep it fast
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_seed_k_of_a_batch_equals_a_single_run_of_seed_k(variant: str) -> None:
    config = SMALL.replace(seed=3, **VARIANTS[variant])
    num_seeds = 4
    runs, actions = multi_run(config, num_seeds)
    assert runs.seeds == (3, 4, 5, 6)
    for k in (num_seeds - 1,):  # the last seed of the batch (16 seeds: first and last below)
        seed = 3 + k
        single_actions, single_tensors, single_updates = single_run(config.replace(seed=seed))
        assert runs.learner.seed_num_updates(k) == single_updates
        if variant != "dueling":
            assert single_updates == NUM_UPDATES
        np.testing.assert_array_equal(actions[:, k], single_actions)
        tensors = runs.learner.seed_tensors(k)
        atol = 1e-4 if variant == "dueling" else 0.0
        for key, value in single_tensors.items():
            if key.startswith(("q_net.", "target_net.", "optim.")):
                torch.testing.assert_close(tensors[key], value, rtol=0, atol=atol, msg=key)


def test_sixteen_seeds_match_their_single_runs() -> None:
    """The claim at its full size: seed k of a 16-seed batch after 1,000 updates."""
    runs, actions = multi_run(SMALL, 16)
    for k in (0, 15):
        single_actions, single_tensors, _ = single_run(SMALL.replace(seed=k))
        np.testing.assert_array_equal(actions[:, k], single_actions)
        tensors = runs.learner.seed_tensors(k)
        for key in single_tensors:
            if key.startswith("q_net."):
                torch.testing.assert_close(tensors[key], single_tensors[key], rtol=0, atol=0)
    # Seeds differ from each other (the test above is not passing on identical runs).
    assert not np.array_equal(actions[:, 0], actions[:, 1])


# ---------------------------------------------------------------------- run dirs and resume
TINY = SMALL.replace(
    total_steps=1200,
    hidden_sizes=(16,),
    eval_interval=400,
    eval_episodes=2,
    checkpoint_interval=500,
    checkpoint_max_overhead=None,
)


def test_each_seed_gets_a_run_dir_that_dqn_loads(tmp_path) -> None:
    runs = MultiSeedDQN("CartPole-v1", TINY.replace(seed=5), num_seeds=3, run_dir=tmp_path)
    runs.learn()
    assert (tmp_path / "multi_seed.json").is_file()
    assert (tmp_path / "aggregate.json").is_file()
    for k, seed in enumerate((5, 6, 7)):
        seed_dir = tmp_path / f"seed_{seed}"
        for name in ("config.toml", "run.json", "episodes.csv", "train.csv", "evals.csv"):
            assert (seed_dir / name).is_file(), name
        evals = (seed_dir / "evals.csv").read_text().splitlines()
        assert [line.split(",")[0] for line in evals[1:]] == ["400", "800", "1200"]
        final = DQN.load(seed_dir / "final")
        assert final.config.seed == seed
        assert final.learner.num_updates == runs.learner.seed_num_updates(k) == 251
        for key, value in runs.learner.seed_tensors(k).items():
            torch.testing.assert_close(final.learner.tensors()[key], value, rtol=0, atol=0)
        DQN.load(seed_dir)  # its best model, as `qlearn eval SEED_DIR` loads it


def test_one_checkpoint_holds_every_seed_and_resume_restores_all(tmp_path) -> None:
    config = TINY.replace(total_steps=1000)
    runs = MultiSeedDQN("CartPole-v1", config, num_seeds=3, run_dir=tmp_path)
    runs.learn()
    (latest,) = [p.name for p in (tmp_path / "checkpoints").iterdir()][-1:]
    assert latest == "step_0000001000"
    resumed = MultiSeedDQN.resume(tmp_path)
    assert resumed.counters.step == 1000
    for k in range(3):
        for key, value in runs.learner.seed_tensors(k).items():
            torch.testing.assert_close(resumed.learner.seed_tensors(k)[key], value, rtol=0, atol=0)
        assert resumed.learner.rngs[k].random() == runs.learner.rngs[k].random()
        a, b = runs.learner.replays[k], resumed.learner.replays[k]
        assert len(a) == len(b) == 1000
        np.testing.assert_array_equal(a.storage.obs[:1000], b.storage.obs[:1000])
        assert resumed.seed_counters[k] == runs.seed_counters[k]
    resumed.learn(200)
    assert resumed.counters.step == 1200
    assert resumed.learner.num_updates == 251


def test_resume_after_sigkill(tmp_path) -> None:
    """A multi-seed run killed with SIGKILL mid-training resumes from its last checkpoint."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    settings = ["checkpoint_interval=300", "checkpoint_max_overhead=none", "hidden_sizes=[16]"]
    settings += ["eval_interval=0", "learning_starts=200", "buffer_size=5000"]
    args = [sys.executable, "-c", "from qlearn.cli import main; main()", "train", "CartPole-v1"]
    args += ["--seeds", "3", "--steps", "1000000", "--run-dir", str(run), "--no-progress"]
    for setting in settings:
        args += ["--set", setting]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(list((run / "checkpoints").glob("step_*"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    resumed = MultiSeedDQN.resume(run)
    step = resumed.counters.step
    assert step >= 300 and step % 300 == 0
    assert all(len(r) == step for r in resumed.learner.replays)
    resumed.learn(100)
    assert resumed.counters.step == step + 100
    for seed in resumed.seeds:
        rows = (run / f"seed_{seed}" / "train.csv").read_text().splitlines()
        steps = [int(line.split(",")[0]) for line in rows[1:]]
        assert steps == sorted(set(steps))  # no row duplicated by the resume


def test_multi_seed_refuses_what_it_cannot_run() -> None:
    from qlearn.errors import ConfigError

    with pytest.raises(ConfigError, match="num_envs = 2"):
        MultiSeedDQN("CartPole-v1", SMALL.replace(num_envs=2), num_seeds=2)
    with pytest.raises(ConfigError, match="env id"):
        MultiSeedDQN(gym.make("CartPole-v1"), SMALL, num_seeds=2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_seeds = 0"):
        MultiSeedDQN("CartPole-v1", SMALL, num_seeds=0)
