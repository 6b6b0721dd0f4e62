"""Initialisation diagnostics: per-layer activation and gradient statistics.

A deep network whose weights are badly scaled makes activations and gradients grow or shrink
exponentially with depth. `init_study` shows this on a plain stack of square linear layers;
`layer_grad_norms` and `layer_activation_stats` measure the same quantities on any network, such
as a DQN's Q-network during training.

The study's weight schemes (`STUDY_SCHEMES`):

- `identity_plus`: 1.5 x identity. With linear activations layer l multiplies its input by
  exactly 1.5, so the activations after l layers are 1.5^l times the input (the literature's
  example of exploding activations).
- `identity_minus`: 0.5 x identity; activations shrink as 0.5^l (vanishing).
- `gaussian_plus` / `gaussian_minus`: the random analogues, N(0, s^2 / fan_in) with s = 1.5 and
  0.5. In a linear stack they scale the activation variance by s^2 (2.25 or 0.25) per layer in
  expectation, as the identity schemes do exactly.
- `xavier`: N(0, 1 / fan_in). This is the "Xavier" of deeplearning.ai's note on initialisation
  (LeCun-normal, `lecun_normal` in `qlearn.networks`); it keeps the variance of a linear or tanh
  stack. PyTorch's `xavier_normal_` instead uses 2 / (fan_in + fan_out), the same for square
  layers.
- `kaiming`: N(0, 2 / fan_in) (He et al., 2015), which keeps the variance of a ReLU stack; with
  ReLU, `xavier` halves it at every layer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import torch
from torch import nn

from qlearn.config import DEFAULT_STUDY_SCHEMES, STUDY_SCHEMES, check_range
from qlearn.errors import ConfigError
from qlearn.networks import NoisyLinear, init_layer

ACTIVATIONS: tuple[str, ...] = ("linear", "relu", "tanh")

# The study's schemes that `networks.init_layer` already provides, under its names.
_NETWORK_SCHEMES = {"xavier": "lecun_normal", "kaiming": "kaiming"}
_IDENTITY_SCALES = {"identity_plus": 1.5, "identity_minus": 0.5}
_GAUSSIAN_SCALES = {"gaussian_plus": 1.5, "gaussian_minus": 0.5}
_MEASURED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, NoisyLinear)


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """Statistics of one layer of the study network.

    Attributes:
        layer: 1 for the first layer, up to the depth.
        activation_mean: mean of the layer's output (after its activation function) over the
            batch and the units.
        activation_var: variance (population, not unbiased) of the same values.
        grad_norm: Frobenius norm of the loss's gradient with respect to the layer's weight.
        backward_norm: norm of the gradient of one example's output sum with respect to the
            layer's output, root-mean-square over the batch: the signal backpropagation carries.
    """

    layer: int
    activation_mean: float
    activation_var: float
    grad_norm: float
    backward_norm: float


@dataclasses.dataclass(frozen=True)
class StudyResult:
    """What `init_study` measured.

    Attributes:
        depth: linear layers in the stack.
        width: units of every layer (and of the input).
        activation: `linear`, `relu` or `tanh`, applied after every layer.
        batch: examples in the input batch.
        seed: seed of the input batch and the random weights.
        input_mean: mean of the input batch.
        input_var: variance of the input batch.
        layers: for each scheme, in the order asked for, one LayerStats per layer.
    """

    depth: int
    width: int
    activation: str
    batch: int
    seed: int
    input_mean: float
    input_var: float
    layers: dict[str, tuple[LayerStats, ...]]


def init_study_layer(layer: nn.Linear, scheme: str) -> None:
    """Initialise `layer` with one of `STUDY_SCHEMES`, biases at zero.

    Draws from torch's global generator for the random schemes; seed it (or use
    `torch.random.fork_rng`) to reproduce a draw.
    """
    with torch.no_grad():
        if scheme in _NETWORK_SCHEMES:
            init_layer(layer, _NETWORK_SCHEMES[scheme])
            return
        if scheme in _IDENTITY_SCALES:
            nn.init.eye_(layer.weight)
            layer.weight.mul_(_IDENTITY_SCALES[scheme])
        elif scheme in _GAUSSIAN_SCALES:
            std = _GAUSSIAN_SCALES[scheme] / math.sqrt(layer.in_features)
            nn.init.normal_(layer.weight, 0.0, std)
        else:
            raise ConfigError(
                f"scheme = {scheme!r} is unknown; allowed: {', '.join(STUDY_SCHEMES)}"
            )
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


def _activation_module(activation: str) -> nn.Module:
    if activation == "linear":
        return nn.Identity()
    if activation == "relu":
        return nn.ReLU()
    if activation == "tanh":
        return nn.Tanh()
    raise ConfigError(f"activation = {activation!r} is unknown; allowed: {', '.join(ACTIVATIONS)}")


def study_network(
    depth: int, width: int, scheme: str, activation: str = "linear", seed: int = 0
) -> nn.Sequential:
    """A stack of `depth` square linear layers, each followed by `activation`, in float64.

    float64 keeps exploding and vanishing values representable over the depths worth showing.
    The random schemes draw from a generator seeded with `seed`; torch's global generator is
    left as it was.

    Returns:
        nn.Sequential of `depth` (Linear, activation) pairs; `linear` uses nn.Identity.
    """
    check_range("depth", depth, 1)
    check_range("width", width, 1)
    check_range("seed", seed, 0)
    if scheme not in STUDY_SCHEMES:
        raise ConfigError(f"scheme = {scheme!r} is unknown; allowed: {', '.join(STUDY_SCHEMES)}")
    modules: list[nn.Module] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(depth):
            linear = nn.Linear(width, width, dtype=torch.float64)
            init_study_layer(linear, scheme)
            modules += [linear, _activation_module(activation)]
    return nn.Sequential(*modules)


def layer_statistics(network: nn.Sequential, x: torch.Tensor) -> tuple[LayerStats, ...]:
    """Forward `x` through `network` and backpropagate the loss; measure every layer.

    A layer is an nn.Linear with the modules that follow it up to the next nn.Linear; its output
    is the tensor there. The loss is the sum of the last layer's outputs, averaged over the
    batch: loss = mean_b sum_i y[b, i]. The network's `.grad` fields are left untouched.

    Args:
        network: Linear layers and activations, as built by `study_network`.
        x: input batch, (batch, in_features), in the network's dtype.

    Returns:
        One LayerStats per nn.Linear, first layer first.
    """
    modules = list(network)
    linears = [m for m in modules if isinstance(m, nn.Linear)]
    if not modules or not isinstance(modules[0], nn.Linear):
        raise ConfigError("network must start with an nn.Linear layer")
    outputs: list[torch.Tensor] = []
    h = x
    for i, module in enumerate(modules):
        h = module(h)
        if i + 1 == len(modules) or isinstance(modules[i + 1], nn.Linear):
            outputs.append(h)
    batch = x.shape[0]
    loss = h.sum() / batch
    grads = torch.autograd.grad(loss, [*(m.weight for m in linears), *outputs])
    weight_grads, output_grads = grads[: len(linears)], grads[len(linears) :]
    stats = []
    for index, (out, w_grad, o_grad) in enumerate(
        zip(outputs, weight_grads, output_grads, strict=True), start=1
    ):
        values = out.detach()
        # Undo the 1 / batch of the loss to get each example's own gradient, then take the
        # root-mean-square of their norms: ||batch * o_grad||_F / sqrt(batch).
        backward = torch.linalg.vector_norm(o_grad) * math.sqrt(batch)
        stats.append(
            LayerStats(
                layer=index,
                activation_mean=float(values.mean()),
                activation_var=float(values.var(correction=0)),
                grad_norm=float(torch.linalg.vector_norm(w_grad)),
                backward_norm=float(backward),
            )
        )
    return tuple(stats)


def init_study(
    depth: int = 10,
    width: int = 2,
    schemes: Sequence[str] = DEFAULT_STUDY_SCHEMES,
    activation: str = "linear",
    batch: int = 1024,
    seed: int = 0,
) -> StudyResult:
    """Measure per-layer activations and gradients of a deep stack under several inits.

    Every scheme gets the same input, a (batch, width) standard-normal batch, and a fresh
    `study_network` (the weights of every random scheme come from one draw, scaled). The input
    and the weights use two independent seeds spawned from `seed`, so the input is not
    correlated with the weights. See `layer_statistics` for the loss and the quantities measured.

    Raises:
        ConfigError: a size out of range, an unknown scheme or activation, or no scheme.
    """
    check_range("depth", depth, 1)
    check_range("width", width, 1)
    check_range("batch", batch, 1)
    check_range("seed", seed, 0)
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"activation = {activation!r} is unknown; allowed: {', '.join(ACTIVATIONS)}"
        )
    if not schemes:
        raise ConfigError(f"schemes is empty; allowed: any of {', '.join(STUDY_SCHEMES)}")
    for scheme in schemes:
        if scheme not in STUDY_SCHEMES:
            raise ConfigError(
                f"scheme = {scheme!r} is unknown; allowed: {', '.join(STUDY_SCHEMES)}"
            )
    input_seed, weight_seed = (
        int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(2)
    )
    generator = torch.Generator().manual_seed(input_seed)
    x = torch.randn(batch, width, generator=generator, dtype=torch.float64)
    layers = {
        scheme: layer_statistics(study_network(depth, width, scheme, activation, weight_seed), x)
        for scheme in dict.fromkeys(schemes)
    }
    return StudyResult(
        depth=depth,
        width=width,
        activation=activation,
        batch=batch,
        seed=seed,
        input_mean=float(x.mean()),
        input_var=float(x.var(correction=0)),
        layers=layers,
    )


def _measured_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in module.named_modules() if isinstance(m, _MEASURED_LAYERS)]


def _weight(layer: nn.Module) -> torch.Tensor:
    return cast(torch.Tensor, layer.weight_mu if isinstance(layer, NoisyLinear) else layer.weight)


def layer_grad_norms(module: nn.Module) -> dict[str, float]:
    """The norm of each layer's weight gradient, to call after `backward()`.

    Covers nn.Linear and nn.Conv1d/2d/3d layers (their `weight`) and NoisyLinear layers (their
    `weight_mu`). Layers whose weight has no gradient are left out.

    Returns:
        {layer name as in `named_modules()`: Frobenius norm of the weight's `.grad`}.
    """
    norms = {}
    for name, layer in _measured_layers(module):
        grad = _weight(layer).grad
        if grad is not None:
            norms[name] = float(torch.linalg.vector_norm(grad))
    return norms


def layer_activation_stats(module: nn.Module, x: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Run `module(x)` without gradients and record each layer's output statistics.

    Forward hooks on the nn.Linear, nn.Conv1d/2d/3d and NoisyLinear layers see each layer's output
    (before any activation that follows it); the hooks are removed afterwards.

    Returns:
        {layer name as in `named_modules()`: (mean, population variance) of its output}.
    """
    stats: dict[str, tuple[float, float]] = {}

    def recorder(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(_layer: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            out = output.detach().double()
            stats[name] = (float(out.mean()), float(out.var(correction=0)))

        return hook

    handles = [
        layer.register_forward_hook(recorder(name)) for name, layer in _measured_layers(module)
    ]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return stats
