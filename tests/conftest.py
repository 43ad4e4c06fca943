import numpy as np
import pytest

from unet_core.prepare import PrepareConfig, prepare

from ._cells import cell_masks, write_frames


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


@pytest.fixture(scope="session")
def cell_store(tmp_path_factory):
    """A prepared store of instance labels: 4 frames of 64 x 96 with touching cells, train 0-2, val 2-4
    (frame 3 recorded as partly annotated)."""
    folder = tmp_path_factory.mktemp("cells")
    path = folder / "data.ome.zarr"
    split = {"train_slices": (0, 2), "val_slices": (2, 4), "test_slices": (4, 4), "partial_slices": (3,)}
    prepare(path, PrepareConfig(**write_frames(folder, cell_masks()), **split, chunks=(1, 64, 96)))
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)
