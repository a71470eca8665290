"""EfficientNet-Lite0 (no squeeze-excitation, ReLU6, TF "same" padding), with parameter names that
match the EfficientNet-PyTorch layout of the shipped ``efficientnet-lite0-57934424.pth``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# TensorFlow BN: epsilon 1e-3, decay 0.99  ->  PyTorch momentum = 1 - 0.99.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01

# (repeats, kernel, stride, expand ratio, in channels, out channels), one row per stage.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

# The network scales pixels as (x*255 - 127) / 128, i.e. mean 127/255 and std 128/255.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


def tf_same_pad(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of one spatial axis as TensorFlow's "SAME" computes it."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding computed from the input size (asymmetric if odd)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = tf_same_pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = tf_same_pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand (if ratio > 1), depthwise conv, 1x1 project."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.act = nn.ReLU6()
        self.use_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = self.act(self._bn0(self._expand_conv(h)))
        h = self.act(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.use_skip else h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone + classifier; input is already normalised."""

    def __init__(self, stages=LITE0_STAGES, stem_ch: int = 32, head_ch: int = 1280,
                 num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = SameConv2d(3, stem_ch, 3, stride=2)
        self._bn0 = _bn(stem_ch)
        blocks = []
        for repeats, kernel, stride, expand, in_ch, out_ch in stages:
            for i in range(repeats):
                blocks.append(MBConvBlock(in_ch if i == 0 else out_ch, out_ch, kernel,
                                          stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(stages[-1][5], head_ch, 1)
        self._bn1 = _bn(head_ch)
        self.act = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head_ch, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled (N, head_ch) features before dropout and the classifier."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._avg_pooling(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.features(x)))


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    """Randomly initialised EfficientNet-Lite0."""
    return EfficientNetLite(LITE0_STAGES, num_classes=num_classes)
