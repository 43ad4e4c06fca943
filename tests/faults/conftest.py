"""Fixtures shared by the fault-injection tests: a tiny model and a volume predicted without faults."""

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from unet_core import io
from unet_core.checkpoint import save_checkpoint
from unet_core.model import UNet, UNetConfig
from unet_core.predict import PredictOptions, predict_file

from ._support import random_volume, torch_threads, tree_bytes

BLOCK = ("--block-shape", "1", "16", "16", "--threads", "1")


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    """A depth-2, width-4 U-Net checkpoint (untrained: faults do not care about accuracy)."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=2, width=4))
    path = tmp_path_factory.mktemp("model") / "best.pt"
    state = {"model_config": model.config.to_dict(), "model_state": model.state_dict()}
    save_checkpoint(path, state | {"normalization": [0.0, 255.0]})
    return path


@dataclass(frozen=True)
class PredictCase:
    """A (6, 64, 96) volume, its prediction in 16 x 16 chunks (144 of them) and that store's files."""

    model: Path
    source: Path
    reference: dict[str, bytes]

    def argv(self, output: Path, *extra: str) -> list:
        return ["predict", self.model, self.source, output, *BLOCK, *extra]


@pytest.fixture(scope="session")
def predict_case(tmp_path_factory, model_file) -> PredictCase:
    folder = tmp_path_factory.mktemp("predict")
    source = folder / "in.ome.zarr"
    io.write_image(source, random_volume((6, 64, 96), seed=5), chunks=(1, 32, 32))
    with torch_threads(1):
        predict_file(
            model_file, source, folder / "straight.ome.zarr", options=PredictOptions(block_shape=(1, 16, 16))
        )
    return PredictCase(model_file, source, tree_bytes(folder / "straight.ome.zarr"))
