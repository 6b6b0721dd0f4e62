"""Q-networks: MLP and CNN torsos, plain / dueling / noisy / distributional heads, init schemes."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from qlearn.config import InitScheme
from qlearn.errors import ConfigError

INIT_SCHEMES: tuple[str, ...] = (
    "xavier_normal",
    "xavier_uniform",
    "lecun_normal",
    "kaiming",
    "orthogonal",
    "torch_default",
)


def init_layer(layer: nn.Linear | nn.Conv2d, scheme: str) -> None:
    """Initialise a layer's weights with `scheme` and its bias with zeros.

    `torch_default` keeps PyTorch's own initialisation, bias included.
    """
    w = layer.weight
    if scheme == "torch_default":
        return
    if scheme == "xavier_normal":
        nn.init.xavier_normal_(w)
    elif scheme == "xavier_uniform":
        nn.init.xavier_uniform_(w)
    elif scheme == "lecun_normal":
        fan_in = nn.init._calculate_correct_fan(w, "fan_in")
        nn.init.normal_(w, 0.0, 1.0 / math.sqrt(fan_in))
    elif scheme == "kaiming":
        nn.init.kaiming_normal_(w, nonlinearity="relu")
    elif scheme == "orthogonal":
        nn.init.orthogonal_(w, gain=math.sqrt(2))
    else:
        raise ConfigError(f"init = {scheme!r} is unknown; allowed: {', '.join(INIT_SCHEMES)}")
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


# Up to this many rows, a noisy layer applies its noise without building the noisy weight matrix.
# Measured on MinAtar's 1600x128 layer, one thread, factorised vs built: 1 row 111 vs 393 us,
# 32 rows 526 vs 600 us, 96 rows 1,278 vs 848 us (without gradients; with them 864 vs 1,353,
# 1,405 vs 1,563, 2,640 vs 2,309).
FACTORISED_MAX_ROWS = 32


class NoisyLinear(nn.Module):
    """Linear layer with factorised Gaussian noise on weights and biases (Fortunato et al., 2018).

    y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b, with eps_w = f(eps_out) f(eps_in)^T
    and f(x) = sign(x) sqrt(|x|). Call `reset_noise()` to draw new noise; in eval mode the noise is
    off and the layer is its mean. The first noise is drawn from torch's global generator, as the
    initial weights are.
    """

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.5) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(
            torch.empty(out_features, in_features).uniform_(-bound, bound)
        )
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), sigma0 * bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), sigma0 * bound))
        self.register_buffer("eps_in", torch.zeros(in_features))
        self.register_buffer("eps_out", torch.zeros(out_features))
        self.reset_noise()

    @staticmethod
    def _scaled(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        x = torch.randn(n, generator=generator, device=device)
        return x.sign() * x.abs().sqrt()

    def reset_noise(self, generator: torch.Generator | None = None) -> None:
        """Draw new eps_in and eps_out from `generator` (torch's global one when None).

        The noise is drawn on the generator's device and copied to the layer's, so one CPU
        generator can serve a network on any device.
        """
        device = generator.device if generator is not None else self.eps_in.device
        self.eps_in.copy_(self._scaled(self.in_features, generator, device))
        self.eps_out.copy_(self._scaled(self.out_features, generator, device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return nn.functional.linear(x, self.weight_mu, self.bias_mu)
        bias = self.bias_mu + self.bias_sigma * self.eps_out
        if x.shape[0] <= FACTORISED_MAX_ROWS:
            # (sigma * outer(eps_out, eps_in)) x = eps_out * (sigma (eps_in * x)): two
            # matmuls instead of building an (out, in) noisy weight for a few rows.
            mean = nn.functional.linear(x, self.weight_mu, bias)
            return mean + nn.functional.linear(x * self.eps_in, self.weight_sigma) * self.eps_out
        weight = self.weight_mu + self.weight_sigma * torch.outer(self.eps_out, self.eps_in)
        return nn.functional.linear(x, weight, bias)


def plain_mlp_blockers(torso: str, *, dueling: bool, noisy: bool, num_atoms: int) -> list[str]:
    """What makes a Q-network more than a plain MLP (Linear -> ReLU -> ... -> Linear on flat
    input), as `setting = value` strings; empty for a plain MLP, which `mlp_forward` runs."""
    blockers = []
    if torso != "mlp":
        blockers.append(f"network = {torso!r}")
    if dueling:
        blockers.append("dueling = true")
    if noisy:
        blockers.append("noisy = true")
    if num_atoms != 1:
        blockers.append(f"a distributional head ({num_atoms} atoms)")
    return blockers


def mlp_forward(layers: Sequence[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> list[np.ndarray]:
    """A plain MLP's forward pass in numpy, keeping every layer's activations.

    Args:
        layers: (weight (out, in), bias (out,)) per linear layer, in order; ReLU between them.
        x: (rows, in) float32 inputs.

    Returns:
        [x, relu(h1), ..., output]: the input, each hidden layer's activation and the
        (rows, out) output, the values `QNetwork.forward` computes.
    """
    acts = [x]
    last = len(layers) - 1
    for i, (w, b) in enumerate(layers):
        h = acts[-1] @ w.T
        h += b
        if i < last:
            np.maximum(h, 0.0, out=h)
        acts.append(h)
    return acts


def expected_q(out: torch.Tensor, distributional: str, support: torch.Tensor) -> torch.Tensor:
    """Q-values from a network's output: the mean of its return distribution.

    Args:
        out: (batch, actions) Q-values, or (batch, actions, atoms) C51 logits or QR quantiles.
        distributional: `none`, `c51` or `qr`.
        support: (atoms,) C51 atom values; unused otherwise.

    Returns:
        (batch, actions): `out` itself, sum_i softmax(out)_i z_i for C51, the mean quantile for QR.
    """
    if distributional == "c51":
        return (out.softmax(-1) * support).sum(-1)
    if distributional == "qr":
        return out.mean(-1)
    return out


def mlp(sizes: Sequence[int], init: str, *, activate_last: bool = True) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        linear = nn.Linear(n_in, n_out)
        init_layer(linear, init)
        layers.append(linear)
        if activate_last or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def conv_output_shapes(
    convs: Sequence[nn.Conv2d], input_shape: tuple[int, int, int]
) -> list[tuple[int, int, int]]:
    """(channels, height, width) after each convolution of a chain, by the size formula
    floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1 (no forward pass)."""
    _, h, w = input_shape
    shapes = []
    for conv in convs:
        sizes = []
        for i, size in enumerate((h, w)):
            pad = conv.padding[i] if isinstance(conv.padding, tuple) else 0
            span = conv.dilation[i] * (conv.kernel_size[i] - 1)
            sizes.append((size + 2 * int(pad) - span - 1) // conv.stride[i] + 1)
        h, w = sizes
        shapes.append((conv.out_channels, h, w))
    return shapes


class MinAtarTorso(nn.Module):
    """The MinAtar paper's network body: one 3x3 conv of 16 channels, stride 1, ReLU.

    Input: (batch, channels, 10, 10) of 0/1 values (channels first).
    """

    def __init__(self, obs_shape: Sequence[int], init: str) -> None:
        super().__init__()
        c, h, w = obs_shape
        self.conv = nn.Conv2d(c, 16, kernel_size=3, stride=1)
        init_layer(self.conv, init)
        self.out_features = 16 * (h - 2) * (w - 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x.float())).flatten(1)


class NatureTorso(nn.Module):
    """The Nature-DQN convolutions (Mnih et al., 2015) on (batch, frames, 84, 84) uint8 input."""

    def __init__(self, obs_shape: Sequence[int], init: str) -> None:
        super().__init__()
        c, h, w = obs_shape
        convs = [
            nn.Conv2d(c, 32, 8, stride=4),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.Conv2d(64, 64, 3, stride=1),
        ]
        for conv in convs:
            init_layer(conv, init)
        self.body = nn.Sequential(convs[0], nn.ReLU(), convs[1], nn.ReLU(), convs[2], nn.ReLU())
        self.out_features = math.prod(conv_output_shapes(convs, (c, h, w))[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.float() / 255.0).flatten(1)


class FlatTorso(nn.Module):
    """Identity body for flat observations (the MLP lives in the head)."""

    def __init__(self, obs_dim: int) -> None:
        super().__init__()
        self.out_features = obs_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().flatten(1)


class QNetwork(nn.Module):
    """Maps observations to one output per action (or per action and atom).

    `QNetwork(8, 4)` is the seeds' network: 8 inputs, two hidden layers of 64 with ReLU, 4 outputs,
    Xavier-normal weights and zero biases.

    Args:
        obs_shape: an int for flat observations, or (channels, height, width) for images.
        num_actions: outputs per atom.
        hidden_sizes: widths of the fully connected layers after the torso.
        torso: `mlp`, `minatar_cnn` or `nature_cnn`.
        init: weight initialisation scheme (see INIT_SCHEMES).
        dueling: split into value and advantage streams, Q = V + A - mean_a A.
        noisy: noisy linear layers in the head.
        noisy_sigma: initial noise scale of the noisy layers.
        num_atoms: 1 for plain Q-values; > 1 for C51 logits or QR quantiles.

    Output: (batch, num_actions) when num_atoms == 1, else (batch, num_actions, num_atoms).
    """

    def __init__(
        self,
        obs_shape: int | Sequence[int],
        num_actions: int,
        hidden_sizes: Sequence[int] = (64, 64),
        *,
        torso: str = "mlp",
        init: InitScheme | str = "xavier_normal",
        dueling: bool = False,
        noisy: bool = False,
        noisy_sigma: float = 0.5,
        num_atoms: int = 1,
    ) -> None:
        super().__init__()
        if init not in INIT_SCHEMES:
            raise ConfigError(f"init = {init!r} is unknown; allowed: {', '.join(INIT_SCHEMES)}")
        self.num_actions = num_actions
        self.num_atoms = num_atoms
        self.dueling = dueling
        shape = (obs_shape,) if isinstance(obs_shape, int) else tuple(obs_shape)
        if torso == "mlp":
            self.torso: nn.Module = FlatTorso(math.prod(shape))
        elif torso == "minatar_cnn":
            self.torso = MinAtarTorso(shape, init)
        elif torso == "nature_cnn":
            self.torso = NatureTorso(shape, init)
        else:
            raise ConfigError(
                f"network = {torso!r} is unknown; allowed: mlp, minatar_cnn, nature_cnn"
            )
        n_in = self.torso.out_features  # type: ignore[attr-defined]
        hidden = list(hidden_sizes)
        if noisy:
            # Noisy layers replace the last hidden and the output layers, as in Rainbow.
            self.body = mlp([n_in, *hidden[:-1]], init)
            last_in = hidden[-2] if len(hidden) > 1 else n_in
            self.streams = nn.ModuleList(
                nn.Sequential(
                    NoisyLinear(last_in, hidden[-1], noisy_sigma),
                    nn.ReLU(),
                    NoisyLinear(hidden[-1], out * num_atoms, noisy_sigma),
                )
                for out in ((1, num_actions) if dueling else (num_actions,))
            )
        else:
            self.body = mlp([n_in, *hidden], init)
            outs = (1, num_actions) if dueling else (num_actions,)
            heads = []
            for out in outs:
                layer = nn.Linear(hidden[-1], out * num_atoms)
                init_layer(layer, init)
                heads.append(layer)
            self.streams = nn.ModuleList(heads)

        self.plain_mlp = not plain_mlp_blockers(
            torso, dueling=dueling, noisy=noisy, num_atoms=num_atoms
        )
        """Linear -> ReLU -> ... -> Linear on flat input: what `mlp_forward` and the numpy
        update engine run."""
        self.linears = [m for m in self.modules() if isinstance(m, nn.Linear)]
        """The linear layers in forward order (every layer of a plain MLP)."""
        # Listed once: noise is redrawn at every env step, where walking modules() costs.
        self._noisy_layers = [m for m in self.modules() if isinstance(m, NoisyLinear)]

    def _mlp_forward(self, obs: torch.Tensor) -> torch.Tensor:
        # Through F.linear directly: module dispatch costs more than the math at CartPole
        # sizes, and this forward runs three times per update.
        x = obs.float().flatten(1)
        last = len(self.linears) - 1
        for i, layer in enumerate(self.linears):
            if layer._forward_hooks or layer._forward_pre_hooks:
                x = layer(x)  # diagnostics hooks (qlearn.diagnostics) must still fire
            else:
                x = nn.functional.linear(x, layer.weight, layer.bias)
            if i < last:
                x = torch.relu(x)
        return x

    def reset_noise(self, generator: torch.Generator | None = None) -> None:
        """Draw fresh noise in every noisy layer from `generator` (torch's global one when None);
        a no-op without noisy layers.

        The noise is that of each layer's own `reset_noise`, f(z) = sign(z) sqrt(|z|) of
        standard normals, drawn for all layers at once: acting redraws it at every env step,
        where a handful of ops costs less than a dozen per layer.
        """
        if not self._noisy_layers:
            return
        # Looked up at each call: moving the module to another device replaces its buffers.
        buffers = [b for layer in self._noisy_layers for b in (layer.eps_in, layer.eps_out)]
        sizes = [b.numel() for b in buffers]
        device = generator.device if generator is not None else buffers[0].device
        z = torch.randn(sum(sizes), generator=generator, device=device)
        scaled = z.abs().sqrt_().copysign_(z).to(buffers[0].device, non_blocking=True)
        torch._foreach_copy_(buffers, list(scaled.split(sizes)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.plain_mlp:
            return self._mlp_forward(obs)
        features = self.body(self.torso(obs))
        batch = features.shape[0]
        if self.dueling:
            value = self.streams[0](features).view(batch, 1, self.num_atoms)
            adv = self.streams[1](features).view(batch, self.num_actions, self.num_atoms)
            out = value + adv - adv.mean(dim=1, keepdim=True)
        else:
            out = self.streams[0](features).view(batch, self.num_actions, self.num_atoms)
        return out.squeeze(-1) if self.num_atoms == 1 else out
