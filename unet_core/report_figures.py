"""The figures every report has, by file stem, with their captions: `FIGURES` for membrane labels (EM),
`CELL_FIGURES` for instance labels (cells); `report_figures` picks by the kind of labels.

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


#: Figures of a report on instance labels (cells of light microscopy) and their captions.
CELL_FIGURES = {
    "cells": (
        "Held-out frames with the lowest, median and highest SEG of the delivered cells, as the U-Net "
        "paper's Fig. 4: raw data, the reference cells' outlines, the outlines of the cells that the "
        "segment step made of the U-Net's map, and each reference cell coloured by its SEG score (the "
        "Jaccard index with the predicted cell covering more than half of it, 0 if none)."
    ),
    "weight_map": (
        "The training target and weight map of the training frame with the most touching cells, as the "
        "U-Net paper's Fig. 3: the pixels of a cell that touch another cell are background in the target "
        "(vermillion: the separation borders), and the weight map w(x) = w_c(x) + w0 exp(-(d1 + d2)^2 / "
        "2 sigma^2) makes the network learn them."
    ),
    "training": (
        "Training: weighted cross-entropy loss, the validation frames' SEG, foreground IoU and Dice of "
        "the cells the segment step makes of the map, and the learning rate against iteration; the dashed "
        "line marks the checkpoint kept as best.pt."
    ),
    "per_frame": (
        "SEG per held-out frame of each method; dashed lines give SEG pooled over all reference cells of "
        "all frames (the table's numbers, not the mean of the bars)."
    ),
}


def report_figures(labels_kind: str) -> dict[str, str]:
    """The figures (stem: caption) of a report on labels of ``labels_kind``, ``binary`` or ``instances``.

    >>> list(report_figures("instances"))
    ['cells', 'weight_map', 'training', 'per_frame']
    """
    return CELL_FIGURES if labels_kind == "instances" else FIGURES


def volume_figure_name(name: str) -> str:
    """File stem of the orthogonal-views figure of the extra volume ``name``.

    >>> volume_figure_name("extra")
    'volume_extra'
    """
    return f"volume_{name}"
