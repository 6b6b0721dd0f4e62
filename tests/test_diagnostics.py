"""Initialisation study and per-layer diagnostics against exact and statistical known answers."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
import torch

from qlearn.diagnostics import (
    init_study,
    layer_activation_stats,
    layer_grad_norms,
    layer_statistics,
    study_network,
)
from qlearn.errors import ConfigError
from qlearn.networks import QNetwork


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread: on shared cores, two threads contend and run several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The literature's example input: two examples of a width-2 network.
X = torch.tensor([[1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
X_MEAN, X_VAR = 0.125, 3.546875  # mean of the 4 entries; population variance
X_BATCH_MEAN_NORM = math.sqrt(2.5625)  # |mean over the batch| = |(-1, 1.25)|


def test_identity_plus_multiplies_the_input_by_exactly_1_5_per_layer() -> None:
    network = study_network(10, 2, "identity_plus", "linear")
    for depth in range(1, 11):
        assert torch.equal(network[: 2 * depth](X), 1.5**depth * X)
    assert torch.equal(network(X), 57.6650390625 * X)


def test_identity_minus_multiplies_the_input_by_exactly_0_5_per_layer() -> None:
    network = study_network(10, 2, "identity_minus", "linear")
    for depth in range(1, 11):
        assert torch.equal(network[: 2 * depth](X), 0.5**depth * X)


@pytest.mark.parametrize("scheme, s", [("identity_plus", 1.5), ("identity_minus", 0.5)])
def test_identity_statistics_per_layer(scheme: str, s: float) -> None:
    # h_l = s^l x. Loss = mean_b sum_i h_10[b, i], so d loss / d h_l[b] = s^(10-l) (1, 1) / B:
    # each example's backward signal has norm s^(10-l) sqrt(2), and
    # d loss / d W_l = sum_b (d loss / d h_l[b]) h_(l-1)[b]^T = s^9 (1, 1)^T mean_b(x)^T,
    # the same at every layer: s^9 sqrt(2) |mean_b x|.
    stats = layer_statistics(study_network(10, 2, scheme, "linear"), X)
    assert [st.layer for st in stats] == list(range(1, 11))
    for st in stats:
        layer = st.layer
        assert st.activation_mean == pytest.approx(s**layer * X_MEAN, rel=1e-12)
        assert st.activation_var == pytest.approx(s ** (2 * layer) * X_VAR, rel=1e-12)
        assert st.backward_norm == pytest.approx(s ** (10 - layer) * math.sqrt(2), rel=1e-12)
        assert st.grad_norm == pytest.approx(s**9 * math.sqrt(2) * X_BATCH_MEAN_NORM, rel=1e-12)


def test_identity_plus_hand_computed_values() -> None:
    stats = layer_statistics(study_network(10, 2, "identity_plus", "linear"), X)
    assert stats[-1].activation_mean == pytest.approx(7.2081298828125, rel=1e-12)  # 57.665 / 8
    assert stats[0].backward_norm == pytest.approx(54.36714, rel=1e-6)  # 1.5^9 sqrt 2
    assert stats[0].grad_norm == pytest.approx(87.029856, rel=1e-6)  # 1.5^9 sqrt(2 * 2.5625)


def test_linear_xavier_keeps_variance_while_scaled_gaussians_explode_and_vanish() -> None:
    result = init_study(
        50, 256, ("xavier", "gaussian_plus", "gaussian_minus"), "linear", batch=256, seed=0
    )
    xavier = [st.activation_var / result.input_var for st in result.layers["xavier"]]
    assert min(xavier) > 0.2 and max(xavier) < 5
    # N(0, s^2 / n) weights scale the variance by s^2 per layer in expectation.
    for scheme, per_layer in (("gaussian_plus", 2.25), ("gaussian_minus", 0.25)):
        v = [st.activation_var for st in result.layers[scheme]]
        factor = (v[-1] / v[0]) ** (1 / 49)
        assert factor == pytest.approx(per_layer, rel=0.05)
        steps = [b / a for a, b in itertools.pairwise(v)]
        assert all(step > 1.5 for step in steps) if per_layer > 1 else max(steps) < 0.5


def test_relu_kaiming_keeps_variance_while_xavier_halves_it_per_layer() -> None:
    result = init_study(21, 256, ("xavier", "kaiming"), "relu", batch=256, seed=0)
    xavier = [st.activation_var for st in result.layers["xavier"]]
    kaiming = [st.activation_var for st in result.layers["kaiming"]]
    assert 0.25 < (xavier[20] / xavier[0]) / 2**-20 < 4
    assert all(0.25 < v / kaiming[0] < 4 for v in kaiming)
    # Same draw scaled by sqrt 2 per layer, and ReLU is positively homogeneous: exactly 2^20.
    assert kaiming[20] / kaiming[0] == pytest.approx(2**20 * xavier[20] / xavier[0], rel=1e-9)


def test_init_study_is_seeded_and_leaves_the_global_generator_alone() -> None:
    state = torch.random.get_rng_state()
    a = init_study(5, 8, ("xavier",), "tanh", batch=16, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert init_study(5, 8, ("xavier",), "tanh", batch=16, seed=3) == a
    assert init_study(5, 8, ("xavier",), "tanh", batch=16, seed=4) != a


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"depth": 0}, "depth = 0"),
        ({"width": 0}, "width = 0"),
        ({"batch": 0}, "batch = 0"),
        ({"schemes": ("xavier", "he")}, "scheme = 'he' is unknown"),
        ({"schemes": ()}, "schemes is empty"),
        ({"activation": "gelu"}, "activation = 'gelu' is unknown"),
    ],
)
def test_init_study_rejects_bad_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        init_study(**kwargs)  # type: ignore[arg-type]


def test_layer_grad_norms_match_each_weight_gradient() -> None:
    torch.manual_seed(0)
    net = QNetwork(4, 3, (8, 5))
    assert layer_grad_norms(net) == {}  # no backward yet
    net(torch.randn(6, 4)).pow(2).sum().backward()
    layers = {"body.0": net.body[0], "body.2": net.body[2], "streams.0": net.streams[0]}
    norms = layer_grad_norms(net)
    assert norms.keys() == layers.keys()
    for name, layer in layers.items():
        assert norms[name] == pytest.approx(float(torch.linalg.vector_norm(layer.weight.grad)))
        assert norms[name] > 0


def test_layer_grad_norms_cover_noisy_layers() -> None:
    torch.manual_seed(0)
    net = QNetwork(4, 2, (8, 8), noisy=True)
    net(torch.randn(6, 4)).sum().backward()
    norms = layer_grad_norms(net)
    assert norms.keys() == {"body.0", "streams.0.0", "streams.0.2"}
    noisy = net.streams[0][2]
    assert norms["streams.0.2"] == pytest.approx(
        float(torch.linalg.vector_norm(noisy.weight_mu.grad))
    )


def test_layer_activation_stats_match_a_manual_forward_pass() -> None:
    torch.manual_seed(0)
    net = QNetwork(4, 3, (8, 5))
    with torch.no_grad():
        for layer in (net.body[0], net.body[2], net.streams[0]):
            layer.bias.normal_()  # biases start at zero; make them count
    x = torch.randn(32, 4)
    stats = layer_activation_stats(net, x)
    with torch.no_grad():
        z1 = x @ net.body[0].weight.T + net.body[0].bias
        z2 = torch.relu(z1) @ net.body[2].weight.T + net.body[2].bias
        q = torch.relu(z2) @ net.streams[0].weight.T + net.streams[0].bias
    expected = {"body.0": z1, "body.2": z2, "streams.0": q}
    assert stats.keys() == expected.keys()
    for name, z in expected.items():
        mean, var = stats[name]
        assert mean == pytest.approx(float(z.mean()), rel=1e-5, abs=1e-6)
        assert var == pytest.approx(float(z.var(correction=0)), rel=1e-5)
    assert all(not m._forward_hooks for m in net.modules())  # hooks removed
    assert net.body[0].weight.grad is None
