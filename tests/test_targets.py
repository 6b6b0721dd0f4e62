"""Bellman targets and distributional losses against hand-computed values and slow references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qlearn.errors import TrainingError
from qlearn.targets import (
    bootstrap_target,
    c51_loss,
    c51_project,
    double_q_target,
    greedy_value,
    max_value,
    nstep_return,
    quantile_huber_loss,
    quantile_midpoints,
    td_target,
)


def t(values: list, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


# --- TD targets ---------------------------------------------------------------------------------

REWARDS = t([1.0, 0.5, -1.0])
DISCOUNTS = t([0.9, 0.81, 0.9])  # γ = 0.9: one step, two steps, one step
TERMINATED = t([0.0, 0.0, 1.0])
NEXT_Q_TARGET = t([[1.0, 3.0], [2.0, -1.0], [5.0, 7.0]])
NEXT_Q_ONLINE = t([[5.0, 1.0], [0.0, 2.0], [1.0, 0.0]])


def test_td_target_hand_computed() -> None:
    y = td_target(REWARDS, DISCOUNTS, TERMINATED, NEXT_Q_TARGET)
    # 1 + 0.9 * max(1, 3) = 3.7;  0.5 + 0.81 * max(2, -1) = 2.12;  terminal: -1
    torch.testing.assert_close(y, t([3.7, 2.12, -1.0]))


def test_td_target_accepts_bool_terminated() -> None:
    y = td_target(REWARDS, DISCOUNTS, TERMINATED.bool(), NEXT_Q_TARGET)
    torch.testing.assert_close(y, t([3.7, 2.12, -1.0]))


def test_double_q_target_scores_the_online_argmax_with_the_target_net() -> None:
    y = double_q_target(REWARDS, DISCOUNTS, TERMINATED, NEXT_Q_ONLINE, NEXT_Q_TARGET)
    # online argmax: [0, 1, 0]
    # 1 + 0.9 * Q_target[0, 0] = 1 + 0.9 * 1 = 1.9  (plain DQN would use 3)
    # 0.5 + 0.81 * Q_target[1, 1] = 0.5 - 0.81 = -0.31
    # terminal: -1
    torch.testing.assert_close(y, t([1.9, -0.31, -1.0]))


def test_double_q_equals_td_target_when_both_nets_agree() -> None:
    y_double = double_q_target(REWARDS, DISCOUNTS, TERMINATED, NEXT_Q_TARGET, NEXT_Q_TARGET)
    torch.testing.assert_close(y_double, td_target(REWARDS, DISCOUNTS, TERMINATED, NEXT_Q_TARGET))


def test_td_target_refuses_a_column_vector_that_would_broadcast() -> None:
    with pytest.raises(TrainingError, match=r"returns has shape \(3, 1\)"):
        td_target(REWARDS[:, None], DISCOUNTS, TERMINATED, NEXT_Q_TARGET)


def test_double_q_target_refuses_mismatched_networks() -> None:
    with pytest.raises(TrainingError, match="next_q_online"):
        double_q_target(REWARDS, DISCOUNTS, TERMINATED, NEXT_Q_ONLINE[:, :1], NEXT_Q_TARGET)


# --- one target for numpy and torch ------------------------------------------------------------


def n(x: torch.Tensor) -> np.ndarray:
    return x.numpy()


def test_numpy_arrays_get_the_hand_computed_targets_too() -> None:
    y = td_target(n(REWARDS), n(DISCOUNTS), n(TERMINATED), n(NEXT_Q_TARGET))
    assert isinstance(y, np.ndarray)
    np.testing.assert_allclose(y, [3.7, 2.12, -1.0])
    y = double_q_target(n(REWARDS), n(DISCOUNTS), n(TERMINATED), n(NEXT_Q_ONLINE), n(NEXT_Q_TARGET))
    np.testing.assert_allclose(y, [1.9, -0.31, -1.0])
    y = td_target(n(REWARDS), n(DISCOUNTS), n(TERMINATED).astype(bool), n(NEXT_Q_TARGET))
    np.testing.assert_allclose(y, [3.7, 2.12, -1.0])


def test_bootstrap_target_shifts_every_quantile_alike() -> None:
    # QR-DQN: y_j = r + γ^k (1 − d) θ_j for each quantile j of the next state.
    quantiles = t([[0.0, 1.0, 2.0], [-1.0, 0.0, 4.0], [9.0, 9.0, 9.0]])
    expected = t([[1.0, 1.9, 2.8], [-0.31, 0.5, 3.74], [-1.0, -1.0, -1.0]])
    y = bootstrap_target(REWARDS, DISCOUNTS, TERMINATED, quantiles)
    torch.testing.assert_close(y, expected)
    y = bootstrap_target(n(REWARDS), n(DISCOUNTS), n(TERMINATED), n(quantiles))
    np.testing.assert_allclose(y, n(expected))


def test_pickers_read_the_greedy_value() -> None:
    torch.testing.assert_close(max_value(NEXT_Q_TARGET), t([3.0, 2.0, 7.0]))
    np.testing.assert_array_equal(max_value(n(NEXT_Q_TARGET)), [3.0, 2.0, 7.0])
    # online argmax [0, 1, 0] reads the target's [1, -1, 5]
    torch.testing.assert_close(greedy_value(NEXT_Q_ONLINE, NEXT_Q_TARGET), t([1.0, -1.0, 5.0]))
    np.testing.assert_array_equal(greedy_value(n(NEXT_Q_ONLINE), n(NEXT_Q_TARGET)), [1, -1, 5])
    # a distribution per action: the chosen action's whole row
    dists = torch.arange(12, dtype=torch.float64).reshape(3, 2, 2)
    torch.testing.assert_close(greedy_value(NEXT_Q_ONLINE, dists), t([[0, 1], [6, 7], [8, 9]]))
    np.testing.assert_array_equal(
        greedy_value(n(NEXT_Q_ONLINE), n(dists)), [[0, 1], [6, 7], [8, 9]]
    )
    # ties go to the first action in both backends
    ties = t([[1.0, 1.0]])
    assert greedy_value(ties, t([[5.0, 6.0]])).tolist() == [5.0]
    assert greedy_value(n(ties), np.array([[5.0, 6.0]])).tolist() == [5.0]


def test_targets_refuse_mixed_backends_and_bad_shapes() -> None:
    with pytest.raises(TrainingError, match="allowed: all torch tensors or all numpy arrays"):
        td_target(n(REWARDS), DISCOUNTS, TERMINATED, NEXT_Q_TARGET)
    with pytest.raises(TrainingError, match="allowed: all torch tensors or all numpy arrays"):
        td_target(REWARDS, DISCOUNTS, TERMINATED, n(NEXT_Q_TARGET))
    with pytest.raises(TrainingError, match=r"returns has shape \(3, 1\)"):
        td_target(n(REWARDS)[:, None], n(DISCOUNTS), n(TERMINATED), n(NEXT_Q_TARGET))
    with pytest.raises(TrainingError, match="next_value has shape"):
        bootstrap_target(REWARDS, DISCOUNTS, TERMINATED, torch.zeros(3, 2, 2))
    with pytest.raises(TrainingError, match="values has shape"):
        greedy_value(NEXT_Q_ONLINE, torch.zeros(3, 3))


@st.composite
def transitions(draw: st.DrawFn) -> dict[str, np.ndarray]:
    batch = draw(st.integers(1, 40))
    num_actions = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    return {
        "returns": (scale * rng.standard_normal(batch)).astype(np.float32),
        "discounts": rng.choice([0.0, 0.9, 0.99**3, 1.0], size=batch).astype(np.float32),
        "terminated": (rng.random(batch) < 0.3).astype(np.float32),
        "online": (scale * rng.standard_normal((batch, num_actions))).astype(np.float32),
        "target": (scale * rng.standard_normal((batch, num_actions))).astype(np.float32),
    }


@settings(max_examples=100, deadline=None)
@given(transitions())
def test_numpy_and_torch_targets_are_bit_identical(case: dict[str, np.ndarray]) -> None:
    # The same arithmetic in float32 in both backends: the numpy engine and the torch engine
    # train on exactly the same targets.
    r, g, d = case["returns"], case["discounts"], case["terminated"]
    as_torch = [torch.from_numpy(x) for x in (r, g, d, case["online"], case["target"])]
    np.testing.assert_array_equal(
        td_target(r, g, d, case["target"]), td_target(*as_torch[:3], as_torch[4]).numpy()
    )
    np.testing.assert_array_equal(
        double_q_target(r, g, d, case["online"], case["target"]),
        double_q_target(*as_torch).numpy(),
    )
    # and they equal the formula written out in float64, to float32 rounding
    best = case["online"].argmax(axis=1)
    next_value = case["target"][np.arange(len(r)), best].astype(np.float64)
    expected = r + g.astype(np.float64) * (1 - d) * next_value
    np.testing.assert_allclose(
        double_q_target(r, g, d, case["online"], case["target"]),
        expected,
        rtol=1e-5,
        atol=1e-5 * float(np.abs(expected).max() + 1),
    )


# --- C51 projection -----------------------------------------------------------------------------

SUPPORT = torch.linspace(-2.0, 2.0, 5, dtype=torch.float64)  # [-2, -1, 0, 1, 2], Δz = 1
P = t([0.1, 0.2, 0.3, 0.25, 0.15])


def project_one(reward: float, discount: float, terminated: float) -> torch.Tensor:
    return c51_project(P[None], t([reward]), t([discount]), t([terminated]), SUPPORT)[0]


def test_c51_shift_onto_atoms_with_clamping_at_v_max() -> None:
    # Tz = 1 + z = [-1, 0, 1, 2, 3] -> clamped [-1, 0, 1, 2, 2]: each lands exactly on an atom,
    # and the two top atoms pile up on v_max = 2 (0.25 + 0.15).
    torch.testing.assert_close(project_one(1.0, 1.0, 0.0), t([0.0, 0.1, 0.2, 0.3, 0.4]))


def test_c51_shift_halfway_between_atoms() -> None:
    # Tz = 0.5 + z = [-1.5, -0.5, 0.5, 1.5, 2.5 -> 2]; a halfway atom splits its mass evenly.
    # atom -2: 0.1/2 = 0.05
    # atom -1: 0.1/2 + 0.2/2 = 0.15
    # atom  0: 0.2/2 + 0.3/2 = 0.25
    # atom  1: 0.3/2 + 0.25/2 = 0.275
    # atom  2: 0.25/2 + 0.15 = 0.275
    torch.testing.assert_close(project_one(0.5, 1.0, 0.0), t([0.05, 0.15, 0.25, 0.275, 0.275]))


def test_c51_discount_contracts_the_distribution() -> None:
    # Tz = 0.5 z = [-1, -0.5, 0, 0.5, 1]
    # atom -1: 0.1 + 0.2/2 = 0.2;  atom 0: 0.2/2 + 0.3 + 0.25/2 = 0.525;  atom 1: 0.25/2 + 0.15
    torch.testing.assert_close(project_one(0.0, 0.5, 0.0), t([0.0, 0.2, 0.525, 0.275, 0.0]))


def test_c51_terminal_collapses_onto_the_reward() -> None:
    # Every Tz = r = 0.3: b = 2.3, so 0.7 on atom 0 and 0.3 on atom 1.
    torch.testing.assert_close(project_one(0.3, 0.9, 1.0), t([0.0, 0.0, 0.7, 0.3, 0.0]))
    # Exactly on an atom: everything there.
    torch.testing.assert_close(project_one(-1.0, 0.9, 1.0), t([0.0, 1.0, 0.0, 0.0, 0.0]))


def test_c51_terminal_reward_beyond_the_support_is_clamped() -> None:
    torch.testing.assert_close(project_one(5.0, 0.9, 1.0), t([0.0, 0.0, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(project_one(-3.0, 0.9, 1.0), t([1.0, 0.0, 0.0, 0.0, 0.0]))


def test_c51_identity_when_nothing_moves() -> None:
    # r = 0 and γ^k = 1 maps every atom onto itself, the l == u case for every atom.
    torch.testing.assert_close(project_one(0.0, 1.0, 0.0), P)


def slow_c51_project(
    probs: np.ndarray,
    rewards: np.ndarray,
    discounts: np.ndarray,
    terminated: np.ndarray,
    v_min: float,
    v_max: float,
) -> np.ndarray:
    """Algorithm 1 of Bellemare et al. (2017), one sample and one atom at a time."""
    batch, num_atoms = probs.shape
    dz = (v_max - v_min) / (num_atoms - 1)
    out = np.zeros_like(probs)
    for i in range(batch):
        for j in range(num_atoms):
            z_j = v_min + j * dz
            tz = rewards[i] + discounts[i] * (1.0 - terminated[i]) * z_j
            tz = min(max(tz, v_min), v_max)
            b = min((tz - v_min) / dz, num_atoms - 1)  # rounding can overshoot the last atom
            lo, up = math.floor(b), math.ceil(b)
            if lo == up:
                out[i, lo] += probs[i, j]
            else:
                out[i, lo] += probs[i, j] * (up - b)
                out[i, up] += probs[i, j] * (b - lo)
    return out


@st.composite
def c51_cases(draw: st.DrawFn) -> dict:
    batch = draw(st.integers(1, 6))
    num_atoms = draw(st.integers(2, 21))
    v_min = draw(st.floats(-20.0, 5.0))
    v_max = v_min + draw(st.floats(0.5, 30.0))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, num_atoms)) * draw(st.floats(0.0, 5.0))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    span = v_max - v_min
    rewards = rng.uniform(v_min - span, v_max + span, size=batch)
    # Rewards on the atoms too, to exercise the exact-atom case.
    on_atom = rng.random(batch) < 0.3
    rewards[on_atom] = v_min + rng.integers(0, num_atoms, on_atom.sum()) * span / (num_atoms - 1)
    return {
        "probs": probs,
        "rewards": rewards,
        "discounts": rng.choice([0.0, 0.5, 0.99, 1.0], size=batch),
        "terminated": (rng.random(batch) < 0.3).astype(np.float64),
        "v_min": v_min,
        "v_max": v_max,
    }


def run_c51(case: dict, dtype: torch.dtype) -> torch.Tensor:
    support = torch.linspace(case["v_min"], case["v_max"], case["probs"].shape[1], dtype=dtype)
    return c51_project(
        torch.tensor(case["probs"], dtype=dtype),
        torch.tensor(case["rewards"], dtype=dtype),
        torch.tensor(case["discounts"], dtype=dtype),
        torch.tensor(case["terminated"], dtype=dtype),
        support,
    )


@settings(max_examples=150, deadline=None)
@given(c51_cases())
def test_c51_matches_a_per_sample_loop(case: dict) -> None:
    expected = slow_c51_project(
        case["probs"],
        case["rewards"],
        case["discounts"],
        case["terminated"],
        case["v_min"],
        case["v_max"],
    )
    np.testing.assert_allclose(run_c51(case, torch.float64).numpy(), expected, atol=1e-9)


@settings(max_examples=150, deadline=None)
@given(c51_cases())
def test_c51_conserves_mass(case: dict) -> None:
    projected = run_c51(case, torch.float32)
    assert projected.shape == case["probs"].shape
    assert (projected >= 0).all()
    torch.testing.assert_close(projected.sum(dim=1), torch.ones(len(projected)))


def test_c51_refuses_a_support_of_the_wrong_length() -> None:
    with pytest.raises(TrainingError, match="support has shape"):
        c51_project(P[None], t([0.0]), t([1.0]), t([0.0]), SUPPORT[:4])


# --- C51 loss -----------------------------------------------------------------------------------


def test_c51_loss_hand_computed() -> None:
    logits = torch.stack([torch.zeros(4, dtype=torch.float64), t([0.5, 0.25, 0.125, 0.125]).log()])
    target = t([[0.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    # uniform prediction: -log(1/4) = log 4;  -(0.5 log 0.5 + 0.5 log 0.25) = 1.5 log 2
    torch.testing.assert_close(c51_loss(logits, target), t([math.log(4), 1.5 * math.log(2)]))


def test_c51_loss_sends_no_gradient_into_the_target() -> None:
    logits = torch.zeros(1, 3, requires_grad=True)
    target = torch.tensor([[0.2, 0.3, 0.5]], requires_grad=True)
    c51_loss(logits, target).sum().backward()
    assert target.grad is None
    # d/dlogits of cross-entropy = softmax - target = 1/3 - target
    torch.testing.assert_close(logits.grad, torch.tensor([[1 / 3 - 0.2, 1 / 3 - 0.3, 1 / 3 - 0.5]]))


# --- QR-DQN loss --------------------------------------------------------------------------------

PRED = [[0.0, 1.0]]  # N = 2 quantiles at τ̂ = [0.25, 0.75]
TARGET = [[0.5, 3.0]]


def test_quantile_midpoints() -> None:
    torch.testing.assert_close(quantile_midpoints(4), torch.tensor([0.125, 0.375, 0.625, 0.875]))


@pytest.mark.parametrize(
    ("kappa", "expected"),
    [
        # u = target_j - pred_i: i=0 -> [0.5, 3], i=1 -> [-0.5, 2]
        # κ=1: L/κ = [0.125, 2.5] and [0.125, 1.5]; weights |τ̂ - 1{u<0}| = [.25, .25], [.25, .75]
        #   i=0: (0.25*0.125 + 0.25*2.5) / 2 = 0.328125
        #   i=1: (0.25*0.125 + 0.75*1.5) / 2 = 0.578125
        (1.0, 0.90625),
        # κ=0, plain quantile loss on |u|: i=0: (.25*.5 + .25*3)/2 = .4375; i=1: (.25*.5 + .75*2)/2
        (0.0, 0.4375 + 0.8125),
        # κ=2: L/κ = [0.0625, 2*(3-1)/2 = 2] and [0.0625, 0.5*4/2 = 1]
        #   i=0: (.25*.0625 + .25*2)/2 = .2578125;  i=1: (.25*.0625 + .75*1)/2 = .3828125
        (2.0, 0.640625),
    ],
)
def test_quantile_huber_loss_hand_computed(kappa: float, expected: float) -> None:
    loss = quantile_huber_loss(t(PRED), t(TARGET), kappa=kappa)
    torch.testing.assert_close(loss, t([expected]))


def test_quantile_huber_loss_gradient_hand_computed() -> None:
    pred = t(PRED).requires_grad_()
    target = t(TARGET).requires_grad_()
    quantile_huber_loss(pred, target).sum().backward()
    assert target.grad is None
    # dρ/du = weight * clip(u, -1, 1), and du/dpred = -1, averaged over the 2 targets:
    # pred_0: -(0.25*0.5 + 0.25*1)/2 = -0.1875;  pred_1: -(0.25*(-0.5) + 0.75*1)/2 = -0.3125
    torch.testing.assert_close(pred.grad, t([[-0.1875, -0.3125]]))


def test_quantile_huber_loss_is_per_sample_and_zero_at_the_target() -> None:
    pred = t([[1.0, 2.0], [0.0, 1.0]])
    target = t([[1.0, 2.0], [0.5, 3.0]])
    loss = quantile_huber_loss(pred, target)
    assert loss.shape == (2,)
    # Row 0: u_ij = [[0, 1], [-1, 0]]: (0.25*0.5)/2 + (0.25*0.5)/2 = 0.125; row 1 as above.
    torch.testing.assert_close(loss, t([0.125, 0.90625]))
    assert quantile_huber_loss(pred[:, :1], pred[:, :1]).tolist() == [0.0, 0.0]


# --- n-step return ------------------------------------------------------------------------------


def test_nstep_return_hand_computed() -> None:
    assert nstep_return(np.array([1.0, 2.0, 3.0]), 0.5) == pytest.approx(1 + 0.5 * 2 + 0.25 * 3)
    np.testing.assert_allclose(nstep_return(np.array([[1.0, 1.0], [0.0, 2.0]]), 0.9), [1.9, 1.8])
