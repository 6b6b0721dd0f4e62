"""Replay memory for Atari: the frame-sharing layout against storing obs and next_obs whole.

The 1M-transition figures come from each buffer's byte accounting (`estimate_bytes`), so
nothing of that size is allocated; a small buffer of each kind is then allocated and filled from
a stream of stacked frames to check that its measured `nbytes` per transition matches.

    .venv/bin/python benchmarks/replay_memory.py
    .venv/bin/python benchmarks/replay_memory.py --capacity 1000000 --small 5000
"""

from __future__ import annotations

import numpy as np
from common import add_results, make_parser, write_json

from qlearn.replay import FrameStackStorage, ReplayMemory, estimate_bytes, make_memory
from qlearn.replay.frames import estimate_frame_bytes, num_frame_slots

OBS_SHAPE = (4, 84, 84)
NUM_ACTIONS = 18  # the full Atari action set: the largest action dtype needed is still uint8


def fill_with_episodes(
    buffer: ReplayMemory, num_transitions: int, episode_length: int, seed: int = 0
) -> None:
    """Add a stream of stacked random frames, episodes of `episode_length`, reset padding."""
    rng = np.random.default_rng(seed)
    added = 0
    while added < num_transitions:
        first = rng.integers(0, 256, size=(1, 84, 84), dtype=np.uint8)
        stack = np.repeat(first, 4, axis=0)
        for t in range(min(episode_length, num_transitions - added)):
            frame = rng.integers(0, 256, size=(1, 84, 84), dtype=np.uint8)
            next_stack = np.concatenate([stack[1:], frame])
            buffer.add_one(stack, 0, 0.0, next_stack, t == episode_length - 1)
            stack = next_stack
            added += 1


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=20_000, help="transitions actually allocated")
    parser.add_argument("--episode-length", type=int, default=200)
    add_results(parser)
    args = parser.parse_args()

    naive = estimate_bytes(args.capacity, OBS_SHAPE, np.uint8, NUM_ACTIONS)
    frames = estimate_frame_bytes(args.capacity, OBS_SHAPE, np.uint8, NUM_ACTIONS)
    frame_slots = num_frame_slots(args.capacity, OBS_SHAPE[0])

    small_naive = make_memory(args.small, OBS_SHAPE, np.uint8, NUM_ACTIONS, 0.99)
    small_frames = make_memory(
        args.small, OBS_SHAPE, np.uint8, NUM_ACTIONS, 0.99, stacked_frames=True
    )
    fill_with_episodes(small_frames, args.small, args.episode_length)
    assert isinstance(small_frames.storage, FrameStackStorage)
    frames_written = small_frames.storage.num_frames_written

    rows = [
        ("obs + next_obs whole (FlatStorage)", naive, small_naive.nbytes / args.small),
        ("frames once (FrameStackStorage)", frames, small_frames.nbytes / args.small),
    ]
    print(f"{args.capacity:,} Atari transitions of {OBS_SHAPE} uint8 observations")
    print(f"{'layout':<38} {'bytes (GB)':>11} {'GiB':>7} {'B/transition':>13} {'measured':>9}")
    for name, total, measured in rows:
        print(
            f"{name:<38} {total / 1e9:>11.2f} {total / 2**30:>7.2f} "
            f"{total / args.capacity:>13,.0f} {measured:>9,.0f}"
        )
    print(
        f"ratio {naive / frames:.1f}x; frame ring of {frame_slots:,} slots of 7,056 B; the small "
        f"buffer ({args.small:,} transitions, episodes of {args.episode_length}) wrote "
        f"{frames_written:,} frames ({frames_written / args.small:.3f} per transition)"
    )
    print(
        f"(the measured column includes the small buffer's fixed dedup window of 1,024 frames, "
        f"{1024 * 7056 / args.small:,.0f} B/transition at this size)"
    )
    result = {
        "capacity": args.capacity,
        "obs_shape": list(OBS_SHAPE),
        "naive_bytes": naive,
        "frame_stack_bytes": frames,
        "naive_bytes_per_transition": naive / args.capacity,
        "frame_stack_bytes_per_transition": frames / args.capacity,
        "ratio": naive / frames,
        "frame_slots": frame_slots,
        "small_capacity": args.small,
        "small_naive_nbytes_per_transition": small_naive.nbytes / args.small,
        "small_frame_stack_nbytes_per_transition": small_frames.nbytes / args.small,
        "small_frames_written_per_transition": frames_written / args.small,
        "small_episode_length": args.episode_length,
    }
    out = write_json(args.results / "replay_memory.json", result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
