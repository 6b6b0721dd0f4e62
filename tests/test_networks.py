"""Q-networks: the noisy layer against its formula, the dueling combination, the default MLP."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from qlearn.networks import (
    FACTORISED_MAX_ROWS,
    NoisyLinear,
    QNetwork,
    expected_q,
    mlp_forward,
    plain_mlp_blockers,
)


def noisy_reference(layer: NoisyLinear, x: torch.Tensor) -> torch.Tensor:
    """y = (mu_w + sigma_w * eps_out eps_in^T) x + mu_b + sigma_b * eps_out, built in full."""
    weight = layer.weight_mu + layer.weight_sigma * layer.eps_out[:, None] * layer.eps_in[None, :]
    return x @ weight.T + layer.bias_mu + layer.bias_sigma * layer.eps_out


@pytest.mark.parametrize("rows", [1, FACTORISED_MAX_ROWS, FACTORISED_MAX_ROWS + 1, 100])
def test_noisy_layer_matches_its_formula_and_gradients(rows: int) -> None:
    torch.manual_seed(0)
    layer = NoisyLinear(20, 6, sigma0=0.5)
    x = torch.randn(rows, 20)
    out = layer(x)
    expected = noisy_reference(layer, x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # The same gradients reach mu and sigma, whichever way the noise was applied.
    grads = torch.autograd.grad(out.square().sum(), [layer.weight_mu, layer.weight_sigma])
    ref = torch.autograd.grad(
        noisy_reference(layer, x).square().sum(), [layer.weight_mu, layer.weight_sigma]
    )
    for got, want in zip(grads, ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_noisy_layer_noise_init_and_eval_mode() -> None:
    torch.manual_seed(1)
    layer = NoisyLinear(16, 4, sigma0=0.5)
    assert torch.allclose(layer.weight_sigma, torch.full((4, 16), 0.5 / math.sqrt(16)))
    # Factorised noise f(z) = sign(z) sqrt(|z|) of standard normals, inputs first.
    torch.manual_seed(7)
    layer.reset_noise()
    torch.manual_seed(7)
    z_in, z_out = torch.randn(16), torch.randn(4)
    torch.testing.assert_close(layer.eps_in, z_in.sign() * z_in.abs().sqrt())
    torch.testing.assert_close(layer.eps_out, z_out.sign() * z_out.abs().sqrt())
    x = torch.randn(3, 16)
    layer.eval()
    torch.testing.assert_close(layer(x), x @ layer.weight_mu.T + layer.bias_mu)


def test_network_noise_comes_from_the_given_generator_only() -> None:
    """QNetwork.reset_noise(g) fills every noisy layer, eps_in then eps_out, layer by layer,
    with f(z) of one draw of standard normals from g, and leaves the global generator alone."""
    torch.manual_seed(0)
    net = QNetwork(6, 3, (16, 8), noisy=True, dueling=True)
    target = copy.deepcopy(net)
    layers = [m for m in net.modules() if isinstance(m, NoisyLinear)]
    assert len(layers) == 4  # two per stream
    generator, replica = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    global_state = torch.get_rng_state()
    target_noise = [b.clone() for b in target.buffers()]
    net.reset_noise(generator)
    assert torch.equal(torch.get_rng_state(), global_state)
    z = torch.randn(sum(m.in_features + m.out_features for m in layers), generator=replica)
    got = torch.cat([b for m in layers for b in (m.eps_in, m.eps_out)])
    torch.testing.assert_close(got, z.sign() * z.abs().sqrt())
    for before, after in zip(target_noise, target.buffers(), strict=True):
        assert torch.equal(before, after)  # the copy has noise of its own
    layer = NoisyLinear(4, 2)
    layer.reset_noise(torch.Generator().manual_seed(9))
    z = torch.randn(6, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(layer.eps_in, z[:4].sign() * z[:4].abs().sqrt())


def test_default_network_is_the_seeds_network() -> None:
    torch.manual_seed(0)
    net = QNetwork(8, 4)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(64, 8), (64, 64), (4, 64)]
    assert all(torch.count_nonzero(m.bias) == 0 for m in linears)
    # Xavier normal: std sqrt(2 / (fan_in + fan_out)); 4,096 weights pin it within ~5%.
    std = linears[1].weight.std().item()
    assert std == pytest.approx(math.sqrt(2 / 128), rel=0.05)
    assert net(torch.zeros(5, 8)).shape == (5, 4)


def test_dueling_combines_value_and_mean_centred_advantage() -> None:
    torch.manual_seed(0)
    net = QNetwork(6, 3, (16,), dueling=True)
    x = torch.randn(4, 6)
    features = net.body(net.torso(x))
    value = net.streams[0](features)  # (4, 1)
    adv = net.streams[1](features)  # (4, 3)
    torch.testing.assert_close(net(x), value + adv - adv.mean(dim=1, keepdim=True))


def test_plain_mlp_blockers_name_each_setting() -> None:
    assert plain_mlp_blockers("mlp", dueling=False, noisy=False, num_atoms=1) == []
    assert plain_mlp_blockers("minatar_cnn", dueling=True, noisy=True, num_atoms=51) == [
        "network = 'minatar_cnn'",
        "dueling = true",
        "noisy = true",
        "a distributional head (51 atoms)",
    ]
    assert QNetwork(4, 2).plain_mlp
    assert not QNetwork(4, 2, dueling=True).plain_mlp
    assert not QNetwork(4, 2, num_atoms=5).plain_mlp


def test_numpy_mlp_forward_is_the_network_forward() -> None:
    torch.manual_seed(0)
    net = QNetwork(5, 3, (16, 8))
    layers = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in net.linears]
    x = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    acts = mlp_forward(layers, x)
    assert [a.shape for a in acts] == [(7, 5), (7, 16), (7, 8), (7, 3)]
    assert (acts[1] >= 0).all() and (acts[2] >= 0).all()  # ReLU on the hidden layers only
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(acts[-1], expected, rtol=1e-5, atol=1e-6)
    # by hand: one layer, y = x W^T + b
    w, b = np.array([[1.0, 2.0], [0.0, -1.0]]), np.array([0.5, 0.0])
    np.testing.assert_array_equal(mlp_forward([(w, b)], np.array([[1.0, 1.0]]))[-1], [[3.5, -1.0]])


def test_expected_q_is_the_mean_of_the_distribution() -> None:
    support = torch.tensor([0.0, 10.0])
    logits = torch.log(torch.tensor([[[0.25, 0.75], [1.0, 1e-30]]]))  # (1, 2 actions, 2 atoms)
    torch.testing.assert_close(expected_q(logits, "c51", support), torch.tensor([[7.5, 0.0]]))
    quantiles = torch.tensor([[[1.0, 3.0], [2.0, 2.0]]])
    torch.testing.assert_close(expected_q(quantiles, "qr", support), torch.tensor([[2.0, 2.0]]))
    q = torch.tensor([[1.0, 2.0]])
    assert expected_q(q, "none", support) is q
