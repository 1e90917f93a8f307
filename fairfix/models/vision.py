"""Small image classifiers for ``--factory`` (e.g. ``fairfix.models.vision:small_cnn``).

A factory model reads a ``(B, F)`` row of numeric columns, so these modules take
flattened images (channel-major, as the ``digits_color`` data stores them) and
reshape them.  fairfix's defaults for a factory model with convolutions fit a
CNN: the tap layer is the first convolution (``features.0``: the colour of an
image is still plain there), LoRA adapts every convolution and Linear layer
after it but the head (``features.2``, ``fc1``, ``fc2``), and ``head`` (the
last Linear) reads the final representation.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv-ReLU-conv-ReLU-flatten (``features``), then ``fc1`` -> ``fc2`` -> ``head`` with ReLUs.

    Parameters
    ----------
    channels, size
        Input images are ``channels x size x size``, given flattened channel-major.
    width
        Channels of the convolutions; the dense layers are ``4 * width`` and ``2 * width`` wide.
    n_classes
        Logits out.
    """

    def __init__(self, channels: int = 3, size: int = 8, width: int = 16, n_classes: int = 2):
        super().__init__()
        self.channels, self.size = channels, size
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.fc1 = nn.Linear(width * size * size, 4 * width)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(4 * width, 2 * width)
        self.act2 = nn.ReLU()
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C*S*S)
        """Logits ``(B, n_classes)`` of flattened channel-major images."""
        x = x.reshape(-1, self.channels, self.size, self.size)  # (B, C, S, S)
        h = self.features(x)  # (B, W*S*S)
        h = self.act1(self.fc1(h))  # (B, 4W)
        h = self.act2(self.fc2(h))  # (B, 2W): the final representation
        return self.head(h)  # (B, n_classes)


def small_cnn(channels: int = 3, size: int = 8, width: int = 16, n_classes: int = 2) -> nn.Module:
    """A :class:`SmallCNN`; with the defaults it reads the 192 pixel columns of ``digits_color``."""
    return SmallCNN(channels=channels, size=size, width=width, n_classes=n_classes)
