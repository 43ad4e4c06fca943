import numpy as np
import pytest

from unet_core import io
from unet_core.segment import segment_file, segment_slice


def test_components_are_4_connected():
    prob = np.zeros((5, 5))
    prob[1, 1] = prob[2, 2] = 0.9  # diagonal neighbours: two cells under 4-connectivity
    prob[4, :] = 0.8
    labels = segment_slice(prob)
    assert labels.max() == 3 and labels[1, 1] != labels[2, 2]


def test_watershed_keeps_cells_apart_across_a_faint_gap():
    prob = np.ones((9, 20))
    prob[:, 10] = 0.2  # a membrane ...
    prob[4, 10] = 0.6  # ... with a one-pixel gap that merges the cells under plain thresholding
    assert segment_slice(prob).max() == 1
    labels = segment_slice(prob, method="watershed", seed_threshold=0.95)
    assert labels.max() == 2 and labels[4, 10] in (1, 2)


def test_min_size_drops_specks():
    prob = np.zeros((10, 10))
    prob[0, 0] = 1.0
    prob[5:9, 5:9] = 1.0
    labels = segment_slice(prob, min_size=4)
    assert labels[0, 0] == 0 and (labels[5:9, 5:9] > 0).all()


def test_file_labels_are_unique_across_slices_and_chunks(tmp_path):
    prob = np.zeros((3, 12, 12), np.uint8)
    prob[:, :, :5] = 255
    prob[:, :, 7:] = 200
    io.write_image(tmp_path / "p.ome.zarr", prob, chunks=(2, 5, 5))
    cells = segment_file(tmp_path / "p.ome.zarr", tmp_path / "s.ome.zarr")
    labels = io.read_volume(tmp_path / "s.ome.zarr")
    assert cells == 6 and len(np.unique(labels[labels > 0])) == 6
    assert (labels[:, :, 5:7] == 0).all()


@pytest.mark.parametrize(("kwargs", "match"), [({"method": "magic"}, "method must be one of")])
def test_bad_method_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        segment_slice(np.zeros((3, 3)), **kwargs)


def test_3d_input_to_slice_function_is_refused():
    with pytest.raises(ValueError, match="2D slice"):
        segment_slice(np.zeros((2, 3, 3)))
