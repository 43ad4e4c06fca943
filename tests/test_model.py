import pytest
import torch

from unet_core.model import (
    UNet,
    UNetConfig,
    context,
    output_size,
    valid_input_size,
    valid_output_size,
)


def _simulated_output(n: int, depth: int) -> int | None:
    """Side lengths through the network by hand: valid convs lose 4, pools halve (even sides only)."""
    for _ in range(depth):
        n -= 4
        if n <= 0 or n % 2:
            return None
        n //= 2
    n -= 4
    for _ in range(depth):
        if n < 1:
            return None
        n = 2 * n - 4
    return n if n >= 1 else None


def test_paper_sizes():
    assert output_size(572, 4) == 388
    assert context(4) == 184
    assert valid_input_size(570, 4) == 572
    assert valid_input_size(572, 4) == 572


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_size_arithmetic_matches_layer_by_layer_count(depth):
    for n in range(1, 300):
        expected = _simulated_output(n, depth)
        if expected is None:
            with pytest.raises(ValueError, match="not valid"):
                output_size(n, depth)
        else:
            assert output_size(n, depth) == expected
    for m in range(1, 120):
        out = valid_output_size(m, depth)
        assert out >= m and _simulated_output(out + context(depth), depth) == out
        assert all(_simulated_output(o + context(depth), depth) != o for o in range(m, out))


def test_paper_network_shape_layers_and_channels():
    model = UNet(UNetConfig(depth=4, width=64))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    assert len(convs) == 23
    assert max(c.out_channels for c in convs) == 1024
    assert isinstance(model.dropout, torch.nn.Dropout2d)


def test_forward_output_shape_small_network():
    model = UNet(UNetConfig(depth=2, width=4)).eval()
    x = torch.zeros(3, 1, 92 + 40, 92 + 40)
    assert model(x).shape == (3, 2, output_size(132, 2), output_size(132, 2))


def test_he_initialisation_scale():
    torch.manual_seed(0)
    conv = UNet(UNetConfig(depth=2, width=32)).down[1][0]
    fan_in = conv.in_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)
    assert torch.all(conv.bias == 0)


def test_up_convolutions_get_the_he_scale_of_their_input_channels():
    """A 2x2 stride-2 up-convolution's output pixel sees one tap of each input channel: N = c_in."""
    torch.manual_seed(0)
    upconv = UNet(UNetConfig(depth=2, width=64)).upconv[0]
    assert (upconv.in_channels, upconv.out_channels) == (256, 128)
    assert upconv.weight.std().item() == pytest.approx((2 / 256) ** 0.5, rel=0.05)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("depth", 0, "depth"), ("width", 1.5, "width"), ("dropout", 1.0, "dropout")],
)
def test_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig(**{field: value})


def test_paper_network_has_no_normalisation_by_default():
    model = UNet(UNetConfig(depth=4, width=64))
    assert not [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d | torch.nn.GroupNorm)]


@pytest.mark.parametrize(("norm", "layer"), [("batch", torch.nn.BatchNorm2d), ("group", torch.nn.GroupNorm)])
def test_normalisation_follows_every_convolution_and_keeps_sizes(norm, layer):
    model = UNet(UNetConfig(depth=2, width=16, norm=norm)).eval()
    norms = [m for m in model.modules() if isinstance(m, layer)]
    assert len(norms) == 2 * (2 * 2 + 1)  # two per double convolution: depth + 1 down, depth up
    for block in [*model.down, *model.up]:
        kinds = [type(m) for m in block]
        assert kinds == [torch.nn.Conv2d, layer, torch.nn.ReLU, torch.nn.Conv2d, layer, torch.nn.ReLU]
    if norm == "group":  # 32 groups, or one channel per group when there are fewer than 32 channels
        assert {(m.num_channels, m.num_groups) for m in norms} == {(16, 16), (32, 32), (64, 32)}
    x = torch.rand(2, 1, 132, 132)
    assert model(x).shape == (2, 2, output_size(132, 2), output_size(132, 2))


def test_unknown_normalisation_is_refused():
    with pytest.raises(ValueError, match="norm must be one of"):
        UNetConfig(norm="layer")
