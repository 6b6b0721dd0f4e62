"""Distributed DQN (Ape-X on Ray): throughput of actors, learner, broadcasts and blocks on this
machine, and the time to solve CartPole with actors against a single-process run with the same
hyperparameters.

Sections (all by default; pick with --sections):

- throughput: env steps/s collected with 1, 2 and 4 actors (Ray actors, blocks sent to a shard
  actor, no learner); the learner's updates/s fed from memory in this process, fed by a shard
  actor with prefetching, and while 2 actors collect into that shard; the cost of one weight
  broadcast (one `ray.put`, every actor loads it) and of moving one block to a shard.
- solve: CartPole-v1 (the `cartpole` preset) until a periodic greedy evaluation of 20 episodes
  averages >= 475: single-process, then Ape-X with 2 and 4 actors; wall time and env steps.
- lunar: LunarLander-v3 (the `lunarlander` preset) with 4 actors, 200k steps; best evaluation.

    python benchmarks/distributed.py                          # throughput and solve, seed 0
    python benchmarks/distributed.py --sections lunar
    python benchmarks/distributed.py --quick                  # the smoke version CI runs
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import add_quick, add_results, add_seeds, make_parser, markdown_table, write_json

ENV = "CartPole-v1"


def _spec(env_id: str) -> Any:
    from qlearn.envs import env_spec, make_env

    env = make_env(env_id)
    spec = env_spec(env.observation_space, env.action_space, env_id)
    env.close()
    return spec


def _ray_init(num_cpus: int) -> Any:
    import ray

    env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": env} if env else None,
    )
    return ray


def collect_rate(ray: Any, config: Any, num_actors: int, seconds: float) -> float:
    """Env steps/s that `num_actors` actors collect, their blocks stored by one shard actor."""
    from qlearn.agents.dqn import DQNLearner
    from qlearn.distributed import Actor, DistributedConfig, ReplayShard, ape_x_epsilons
    from qlearn.distributed.parts import network_weights

    d = DistributedConfig()
    spec = _spec(ENV)
    shard = ray.remote(ReplayShard).options(num_cpus=0).remote(config, spec, 1, 0)
    eps = ape_x_epsilons(num_actors)
    actors = [
        ray.remote(Actor)
        .options(num_cpus=0)
        .remote(ENV, spec, config, i, float(eps[i]), d.block_size, 100 + i)
        for i in range(num_actors)
    ]
    weights = ray.put(network_weights(DQNLearner(spec, config)))
    ray.get([a.set_weights.remote(weights, 0) for a in actors])
    ray.get([a.collect.options(num_returns=2).remote()[1] for a in actors])  # warm
    inflight = {}
    for i, a in enumerate(actors):
        block, report = a.collect.options(num_returns=2).remote()
        inflight[report] = (i, block)
    steps, adds = 0, []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ready, _ = ray.wait(list(inflight), num_returns=1)
        for ref in ready:
            i, block = inflight.pop(ref)
            steps += ray.get(ref).num_steps
            adds.append(shard.add.remote(block))
            block, report = actors[i].collect.options(num_returns=2).remote()
            inflight[report] = (i, block)
    elapsed = time.perf_counter() - t0
    ray.get(adds)
    for handle in [*actors, shard]:
        ray.kill(handle)
    return steps / elapsed


def learner_rates(ray: Any, config: Any, seconds: float, num_actors: int) -> dict[str, float]:
    """Learner updates/s: from memory in this process, from a shard actor with prefetching, and
    from that shard while `num_actors` actors collect into it (no replay-ratio throttle)."""
    from qlearn.agents.dqn import DQNLearner
    from qlearn.distributed import Actor, ReplayShard, ape_x_epsilons, train_on_batch

    spec = _spec(ENV)
    learner = DQNLearner(spec, config)
    local = ReplayShard(config, spec, 1, 0)
    rng = np.random.default_rng(0)
    from qlearn.distributed.parts import Block

    n = 20_000
    block = Block(
        obs=rng.normal(size=(n, 4)).astype(np.float32),
        actions=rng.integers(2, size=n),
        returns=rng.normal(size=n).astype(np.float32),
        next_obs=rng.normal(size=(n, 4)).astype(np.float32),
        terminated=rng.random(n) < 0.05,
        steps=np.ones(n, dtype=np.int64),
        priorities=rng.random(n).astype(np.float32),
    )
    local.add(block)
    out: dict[str, float] = {}
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        batch = local.sample(config.batch_size, 0.5)
        _, td = train_on_batch(learner, batch)
        local.update_priorities(batch.indices, td)
        count += 1
    out["in_process_memory"] = count / (time.perf_counter() - t0)

    shard = ray.remote(ReplayShard).options(num_cpus=0).remote(config, spec, 1, 0)
    ray.get(shard.add.remote(block))
    eps = ape_x_epsilons(max(num_actors, 1))
    actors = [
        ray.remote(Actor)
        .options(num_cpus=0)
        .remote(ENV, spec, config, i, float(eps[i]), 64, 200 + i)
        for i in range(num_actors)
    ]
    ray.get([a.pid.remote() for a in actors])  # started: their start-up is not measured
    for label, with_actors in (("shard_actor", False), ("shard_actor_with_actors", True)):
        inflight = {}
        if with_actors:
            for i, a in enumerate(actors):
                blk, rep = a.collect.options(num_returns=2).remote()
                inflight[rep] = (i, blk)
        samples = [shard.sample.remote(config.batch_size, 0.5) for _ in range(4)]
        count, steps, t0 = 0, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            batch = ray.get(samples.pop(0))
            samples.append(shard.sample.remote(config.batch_size, 0.5))
            _, td = train_on_batch(learner, batch)
            shard.update_priorities.remote(batch.indices, td)
            count += 1
            if inflight:
                ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0)
                for ref in ready:
                    i, blk = inflight.pop(ref)
                    steps += ray.get(ref).num_steps
                    shard.add.remote(blk)
                    blk, rep = actors[i].collect.options(num_returns=2).remote()
                    inflight[rep] = (i, blk)
        elapsed = time.perf_counter() - t0
        out[label] = count / elapsed
        if with_actors:
            out["env_steps_per_s_meanwhile"] = steps / elapsed
    for handle in [*actors, shard]:
        ray.kill(handle)
    return out


def message_costs(ray: Any, config: Any, num_actors: int, repeats: int) -> dict[str, float]:
    """Seconds per weight broadcast (one put, every actor loaded) and per block moved."""
    from qlearn.agents.dqn import DQNLearner
    from qlearn.distributed import Actor, ReplayShard
    from qlearn.distributed.parts import network_weights

    spec = _spec(ENV)
    learner = DQNLearner(spec, config)
    actors = [
        ray.remote(Actor).options(num_cpus=0).remote(ENV, spec, config, i, 0.1, 64, 300 + i)
        for i in range(num_actors)
    ]
    shard = ray.remote(ReplayShard).options(num_cpus=0).remote(config, spec, 1, 0)
    ray.get([a.pid.remote() for a in actors])
    t0 = time.perf_counter()
    for version in range(repeats):
        ref = ray.put(network_weights(learner))
        ray.get([a.set_weights.remote(ref, version) for a in actors])
    broadcast = (time.perf_counter() - t0) / repeats
    blocks = [ray.get(actors[0].collect.options(num_returns=2).remote()[0]) for _ in range(3)]
    t0 = time.perf_counter()
    for i in range(repeats):
        ray.get(shard.add.remote(ray.put(blocks[i % 3])))
    move = (time.perf_counter() - t0) / repeats
    nbytes = weight_bytes(ENV, config)
    block_bytes = sum(
        getattr(blocks[0], f).nbytes
        for f in ("obs", "actions", "returns", "next_obs", "terminated", "steps", "priorities")
    )
    for handle in [*actors, shard]:
        ray.kill(handle)
    return {
        "broadcast_s": broadcast,
        "broadcast_bytes": nbytes,
        "broadcast_actors": num_actors,
        "block_s": move,
        "block_transitions": len(blocks[0]),
        "block_bytes": block_bytes,
    }


def weight_bytes(env_id: str, config: Any) -> int:
    """Bytes of the online network's weights: what one broadcast carries."""
    from qlearn.agents.dqn import DQNLearner
    from qlearn.distributed.parts import network_weights

    weights = network_weights(DQNLearner(_spec(env_id), config))
    return sum(v.nbytes for v in weights.values())


def solve(config: Any, num_actors: int, run_dir: Path) -> dict[str, Any]:
    """Train until a periodic evaluation reaches 475; 0 actors means single-process.

    `solve_time_s` counts from the start, Ray's start-up and actor launch included;
    `train_time_s` is the run's own training clock (evaluations excluded; for Ape-X from the
    moment the actors were launched)."""
    from qlearn import DQN
    from qlearn.distributed import ApeX, DistributedConfig

    first: dict[str, Any] = {}
    t0 = time.perf_counter()

    def stop(agent: Any, metrics: dict[str, float]) -> bool:
        if metrics["mean_return"] >= 475 and not first:
            first.update(step=metrics["step"], time_s=time.perf_counter() - t0)
        return not first

    if num_actors == 0:
        agent = DQN(ENV, config, run_dir=run_dir).learn(callback=stop)
    else:
        runner = ApeX(ENV, config, DistributedConfig(num_actors=num_actors), run_dir=run_dir)
        agent = runner.learn(callback=stop)
    wall = time.perf_counter() - t0
    held_out = agent.evaluate(20).mean_return
    return {
        "actors": num_actors,
        "seed": config.seed,
        "solved": bool(first),
        "solve_step": first.get("step"),
        "solve_time_s": first.get("time_s"),
        "wall_s": wall,
        "train_time_s": agent.counters.wall_time,
        "steps": agent.counters.step,
        "updates": agent.learner.num_updates,
        "held_out_mean_20": held_out,
    }


def main() -> None:
    parser = make_parser(__doc__)
    add_results(parser)
    add_quick(parser)
    add_seeds(parser, default="0")
    parser.add_argument("--sections", default="throughput,solve", help="comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput figure")
    args = parser.parse_args()
    import torch

    from qlearn.presets import load_preset

    torch.set_num_threads(1)
    sections = set(args.sections.split(","))
    quick = args.quick
    cartpole = load_preset("cartpole")
    # Ape-X's prioritized replay, priorities from the actors: what the throughput figures cost.
    prioritized = cartpole.replace(prioritized=True)
    record: dict[str, Any] = {"env": ENV, "preset": "cartpole", "quick": quick}
    seconds = 0.5 if quick else args.seconds
    if "throughput" in sections:
        ray = _ray_init(num_cpus=os.cpu_count() or 2)
        try:
            counts = [1] if quick else [1, 2, 4]
            record["collect_steps_per_s"] = {
                str(n): collect_rate(ray, prioritized, n, seconds) for n in counts
            }
            record["learner_updates_per_s"] = learner_rates(
                ray, prioritized, seconds, 1 if quick else 2
            )
            record["messages"] = message_costs(
                ray, prioritized, 1 if quick else 4, 3 if quick else 50
            )
            record["broadcast_bytes_lunarlander_net"] = weight_bytes(
                "LunarLander-v3", load_preset("lunarlander")
            )
        finally:
            ray.shutdown()
        rates = record["collect_steps_per_s"]
        print(
            markdown_table(["actors", "env steps/s"], [[n, f"{v:,.0f}"] for n, v in rates.items()])
        )
        lr = record["learner_updates_per_s"]
        print(
            markdown_table(
                ["learner fed by", "updates/s"], [[k, f"{v:,.1f}"] for k, v in lr.items()]
            )
        )
        print(record["messages"])
    if "solve" in sections:
        rows = []
        for seed in args.seeds:
            config = cartpole.replace(seed=seed)
            if quick:
                config = config.replace(
                    total_steps=1000, learning_starts=500, eval_interval=500, eval_episodes=1
                )
            for actors in [0, 2] if quick else [0, 2, 4]:
                with tempfile.TemporaryDirectory() as tmp:
                    rows.append(solve(config, actors, Path(tmp) / "run"))
                print(rows[-1], flush=True)
        record["solve"] = rows
    if "lunar" in sections:
        from qlearn.distributed import ApeX, DistributedConfig

        config = load_preset("lunarlander").replace(seed=args.seeds[0])
        if quick:
            config = config.replace(total_steps=3000, eval_interval=1000, eval_episodes=2)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            runner = ApeX("LunarLander-v3", config, DistributedConfig(num_actors=4), run_dir=tmp)
            agent = runner.learn()
            record["lunar"] = {
                "actors": 4,
                "steps": agent.counters.step,
                "wall_s": time.perf_counter() - t0,
                "best_periodic_eval": agent.counters.best_eval,
                "final_held_out_mean_20": agent.evaluate(20).mean_return,
            }
        print(record["lunar"])
    name = "distributed_quick.json" if quick else f"distributed_{'_'.join(sorted(sections))}.json"
    path = write_json(args.results / name, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
