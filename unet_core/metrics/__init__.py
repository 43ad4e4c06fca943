"""Segmentation metrics that a paper can quote: the ISBI 2012 and Cell Tracking scores.

The definitions are those of the project's docs/metrics.md, which transcribes Fiji's Trainable
Segmentation metrics (the official ISBI 2012 evaluation); each function's Notes state its
formula. Kernels are compiled with numba when it is installed. Inputs: ``prob`` is the
probability of cell (non-membrane) in [0, 1], ``labels`` the ground truth with
0 = membrane and > 0 = cell, both (Z, Y, X) or (Y, X).
"""

from ._info import vrand_vinfo
from ._iou import iou_seg
from ._pixel import pixel_error, pixel_error_rate
from ._rand import rand_error
from ._scores import evaluation_tables, isbi_scores
from ._topology import SIMPLE_POINT_LUT
from ._validate import DEFAULT_THRESHOLDS, DEFAULT_THRESHOLDS_WITH_1
from ._warping import MISMATCH_CLASSES, warped_ground_truth, warping_error

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DEFAULT_THRESHOLDS_WITH_1",
    "MISMATCH_CLASSES",
    "SIMPLE_POINT_LUT",
    "evaluation_tables",
    "iou_seg",
    "isbi_scores",
    "pixel_error",
    "pixel_error_rate",
    "rand_error",
    "vrand_vinfo",
    "warped_ground_truth",
    "warping_error",
]
