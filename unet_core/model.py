"""The U-Net of Ronneberger, Fischer and Brox (2015), with its valid-convolution size arithmetic.

Each level of the contracting path is two unpadded 3x3 convolutions + ReLU followed by 2x2 max pooling;
the expanding path up-convolves (2x2, halving channels), concatenates the centre-cropped skip and applies
two more 3x3 convolutions. With ``depth = 4`` and ``width = 64`` this is the paper's network: 23
convolution layers, 64..1024 channels, input 572 -> output 388. ``norm`` optionally adds batch or group
normalisation after each convolution (not in the paper; a common way to train deep nets faster).

Size arithmetic (``d = depth``, ``c`` = side after the bottom convolutions)::

    output = 2**d * c - 4 * (2**d - 1)         valid outputs are 4 mod 2**d (388 = 4 mod 16)
    input  = output + context,  context = 12 * 2**d - 8   (184 at depth 4: a 92-px halo each side)
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass

import torch
from torch import nn

NORMS = ("none", "batch", "group")


@dataclass(frozen=True)
class UNetConfig:
    """Architecture hyper-parameters; stored in checkpoints to rebuild the network."""

    depth: int = 4
    width: int = 64
    in_channels: int = 1
    n_classes: int = 2
    dropout: float = 0.5
    norm: str = "none"  # the paper has none; "batch" or "group" normalise after each convolution

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"UNetConfig.norm must be one of {NORMS}, got {self.norm!r}")
        for name in ("depth", "width", "in_channels", "n_classes"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"UNetConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def context(depth: int) -> int:
    """Input pixels lost per axis by the valid convolutions: ``input - output``."""
    return 12 * 2**depth - 8


def output_size(input_size: int, depth: int) -> int:
    """Output side of the network for an input side; raises if the input side is not valid.

    >>> output_size(572, 4)
    388
    """
    out = input_size - context(depth)
    if out < 1 or (out - 4) % 2**depth:
        raise ValueError(
            f"input_size {input_size} is not valid for depth {depth}: every pooled size must be even; "
            f"use valid_input_size({input_size}, {depth}) = {valid_input_size(input_size, depth)}"
        )
    return out


def valid_output_size(min_output: int, depth: int) -> int:
    """Smallest valid output side >= ``min_output`` (valid outputs are 4 mod 2**depth)."""
    step = 2**depth
    k = -(-(min_output - 4) // step)  # ceil division
    while step * k + 4 < 1:
        k += 1
    return step * k + 4


def valid_input_size(min_input: int, depth: int) -> int:
    """Smallest valid input side >= ``min_input``.

    >>> valid_input_size(570, 4)
    572
    """
    out = valid_output_size(max(min_input - context(depth), 1), depth)
    return out + context(depth)


def _normalization(norm: str, channels: int) -> list[nn.Module]:
    if norm == "batch":
        return [nn.BatchNorm2d(channels)]
    if norm == "group":  # 32 groups (Wu & He 2018), fewer when there are fewer channels
        return [nn.GroupNorm(math.gcd(32, channels), channels)]
    return []


def _double_conv(cin: int, cout: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3),
        *_normalization(norm, cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3),
        *_normalization(norm, cout),
        nn.ReLU(inplace=True),
    )


def _center_crop(skip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    dy = (skip.shape[-2] - size[0]) // 2
    dx = (skip.shape[-1] - size[1]) // 2
    return skip[..., dy : dy + size[0], dx : dx + size[1]]


def _incoming_nodes(conv: nn.Conv2d | nn.ConvTranspose2d) -> int:
    """Inputs of one output pixel: c_in x kernel for a convolution, c_in alone for the 2x2 stride-2
    up-convolution, whose kernel taps feed different output pixels (torch's own fan-in for a transposed
    weight counts c_out x kernel, 0.71x the paper's std for halved channels)."""
    taps = conv.kernel_size
    if isinstance(conv, nn.ConvTranspose2d):
        taps = [math.ceil(k / s) for k, s in zip(conv.kernel_size, conv.stride, strict=True)]
    return conv.in_channels * math.prod(taps)


class UNet(nn.Module):
    """The paper's U-Net; ``forward`` returns class logits of shape (N, n_classes, out, out)."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or UNetConfig()
        d, w, norm = self.config.depth, self.config.width, self.config.norm
        widths = [w * 2**i for i in range(d + 1)]
        self.down = nn.ModuleList(
            [_double_conv(self.config.in_channels, widths[0], norm)]
            + [_double_conv(widths[i - 1], widths[i], norm) for i in range(1, d + 1)]
        )
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout2d(self.config.dropout)  # paper: dropout at the end of the contracting path
        self.upconv = nn.ModuleList(
            [nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2) for i in range(d, 0, -1)]
        )
        self.up = nn.ModuleList([_double_conv(widths[i], widths[i - 1], norm) for i in range(d, 0, -1)])
        self.head = nn.Conv2d(widths[0], self.config.n_classes, 1)
        self._init_he()

    def _init_he(self) -> None:
        # The paper: std sqrt(2 / N), N the incoming nodes of one neuron (He et al. 2015).
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.normal_(module.weight, std=math.sqrt(2 / _incoming_nodes(module)))
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = self.dropout(skips.pop())
        for upconv, block in zip(self.upconv, self.up, strict=True):
            x = upconv(x)
            x = block(torch.cat([_center_crop(skips.pop(), x.shape[-2:]), x], dim=1))
        return self.head(x)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: CUDA GPUs, and CPUs with AMX units (Intel Xeon
    from the 4th generation on) or AVX512-BF16 instructions (AMD EPYC from Zen 4 on, Intel Cooper Lake).
    Elsewhere bfloat16 is emulated and slower than float32."""
    if device.type == "cuda":
        return True
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private torch API: absent means no
    return device.type == "cpu" and any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def bf16_autocast(device: torch.device, bf16: bool) -> AbstractContextManager:
    """bfloat16 autocast when asked and `native_bf16`; float32 (no autocast) otherwise."""
    use = bf16 and native_bf16(device)
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else nullcontext()


def memory_format(channels_last: bool) -> torch.memory_format:
    """NHWC when asked: the fast layout of tensor cores and of oneDNN's CPU convolutions (README, "bf16 and
    NHWC on the CPU")."""
    return torch.channels_last if channels_last else torch.contiguous_format


class Ensemble(nn.Module):
    """Several trained U-Nets of one depth acting as one: the mean of their class probabilities.

    ``forward`` returns the log of that mean, so a softmax of its output (as `predict` applies to any
    model's logits) gives the mean probability. On ISBI validation slices the mean of four full-width
    runs scored a Rand error of 0.096 where the runs alone scored 0.113-0.153 (README)."""

    def __init__(self, members: list[UNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        depths = {member.config.depth for member in members}
        if len(depths) > 1:
            raise ValueError(f"ensemble members must have one depth (one halo), got depths {sorted(depths)}")
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = [torch.softmax(member(x).float(), dim=1) for member in self.members]
        return torch.log(torch.stack(probabilities).mean(dim=0))
