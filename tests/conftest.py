import numpy as np
import pytest

from unet_core.prepare import PrepareConfig, prepare


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """A prepared synthetic store: 5 slices of 64 x 64, train 0-3, val 3-4, test 4-5."""
    path = tmp_path_factory.mktemp("store") / "data.ome.zarr"
    prepare(
        path,
        PrepareConfig(
            synthetic_shape=(5, 64, 64),
            seed=1,
            train_slices=(0, 3),
            val_slices=(3, 4),
            test_slices=(4, 5),
            chunks=(1, 32, 32),
            voxel_size=(50.0, 4.0, 4.0),
            unit="nanometer",
        ),
    )
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)
