"""A TAESD decoder written out plainly, for tests: random weights saved in the original file layout.

The network is madebyollin's published TAESD decoder: a tanh clamp of the latent to ±3, a conv
to 64 channels, then three stages of (3 residual blocks, ×2 nearest upsample, bias-free conv), a
last block and a conv to RGB. Built as one `nn.Sequential`, its state dict has exactly the key
names of `taesd_decoder.pth` (`1.weight`, `3.conv.0.weight`, `7.weight`, …, `19.bias`), so the
same module both writes the test files and serves as the reference the product is compared to.
Its output is an image in about [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class TanhClamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3 * torch.tanh(x / 3)


class Residual(nn.Module):
    """conv-relu-conv-relu-conv plus the input, then relu (keys `conv.0`, `conv.2`, `conv.4`)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x) + x)


def reference_decoder(latent_channels: int = 4) -> nn.Sequential:
    layers: list[nn.Module] = [TanhClamp(), nn.Conv2d(latent_channels, 64, 3, padding=1), nn.ReLU()]
    for _stage in range(3):
        layers += [Residual(), Residual(), Residual(), nn.Upsample(scale_factor=2),
                   nn.Conv2d(64, 64, 3, padding=1, bias=False)]
    layers += [Residual(), nn.Conv2d(64, 3, 3, padding=1)]
    return nn.Sequential(*layers)


def random_decoder(seed: int = 0, latent_channels: int = 4) -> nn.Sequential:
    torch.manual_seed(seed)
    return reference_decoder(latent_channels).eval()


def write_decoder(path: Path, network: nn.Module) -> Path:
    """Save `network`'s weights as a TAESD decoder file (.pth or .safetensors by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().clone().contiguous() for key, value in network.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        torch.save(tensors, str(path))
    return path


def constant_colour_decoder(rgb01: tuple[float, float, float]) -> nn.Sequential:
    """A decoder whose image is one colour (in [0, 1]) whatever the latent: the output conv's
    weights are zero and its bias is the colour; everything before it still runs."""
    network = random_decoder(seed=1)
    with torch.no_grad():
        network[19].weight.zero_()
        network[19].bias.copy_(torch.tensor(rgb01))
    return network
