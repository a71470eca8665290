"""The quick profile's network: DLG's LeNet (Zhu et al. 2019: four 5x5 convolutions with strides
2, 2, 1, 1, sigmoid activations, the 8x8 map flattened into the classifier), widened and given a
BatchNorm after every convolution so the BN prior (eq. 9) and BN_exact apply.

Why this network (measured on this 2-core CPU, batch 8, 600 iterations, random init, 32 px):
sigmoid LeNet width 32 reached 18.5 dB / SSIM 0.60 where a ReLU LeNet (12.6 dB), a ReLU ConvNet
(12.8 dB) and the CIFAR ResNet-18 (1.1 s per iteration, 28x slower) stayed at colour blobs.
Smooth activations keep the second derivative the gradient-matching loss needs (DLG's choice).
"""

from __future__ import annotations

from torch import nn

LENET_WIDTHS = (16, 32, 64)


def lenet_bn(num_classes: int = 1000, width: int = 32, side: int = 32) -> nn.Sequential:
    """Conv(5x5, stride 2, 2, 1, 1) -> BN -> sigmoid, four times; flatten; Linear.

    Shape: (N, 3, side, side) -> (N, num_classes); the classifier sees width * (side/4)^2 features.
    """
    def block(cin: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, width, 5, stride=stride, padding=2, bias=False),
                nn.BatchNorm2d(width), nn.Sigmoid()]

    features = nn.Sequential(*block(3, 2), *block(width, 2), *block(width, 1), *block(width, 1),
                             nn.Flatten())
    net = nn.Sequential()
    net.add_module("features", features)
    net.add_module("fc", nn.Linear(width * (side // 4) ** 2, num_classes))
    return net
