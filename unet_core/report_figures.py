"""The figures every report has, by file stem, with their captions.

A module without matplotlib or zarr: the workflow's report rule lists the files ``unet-core report``
writes from it, and importing the report package would slow every parse of the Snakefile.
"""

from __future__ import annotations

#: Figures every report has (``figures/<name>.png|pdf``) and their captions in index.html.
FIGURES = {
    "held_out": (
        "Held-out slices with the lowest, median and highest U-Net Rand error: raw data, ground truth, "
        "U-Net probability of cell interior, cells from the segment step, and what the warping error counts "
        "at its threshold t: the prediction binarised at t (grey), topological errors circled (splits "
        "vermillion, merges blue) and non-topological mismatches (yellow)."
    ),
    "training": (
        "Training: weighted cross-entropy loss, ISBI errors on the validation slices, and the "
        "learning rate against iteration; the dashed line marks the checkpoint kept as best.pt."
    ),
    "thresholds": (
        "ISBI pixel, Rand and warping errors of the U-Net and the intensity-threshold baseline on the "
        "held-out slices against the threshold t on P(cell); dots mark the minimum reported in the table."
    ),
    "per_slice": (
        "ISBI errors per held-out slice at the pooled best threshold of each method; dashed lines give the "
        "value pooled over all held-out slices (the table's numbers; Rand and pixel errors pool counts, so "
        "they are not the mean of the bars)."
    ),
}


def volume_figure_name(name: str) -> str:
    """File stem of the orthogonal-views figure of the extra volume ``name``.

    >>> volume_figure_name("extra")
    'volume_extra'
    """
    return f"volume_{name}"
