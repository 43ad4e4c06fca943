"""The four worked cases of docs/metrics.md, reproduced to the printed digits."""

from pathlib import Path

import numpy as np
import pytest

from unet_core.metrics import isbi_scores, pixel_error, pixel_error_rate, rand_error, warping_error


def _ground_truth() -> np.ndarray:
    """20 x 20, all cell with a 1-px membrane in column 10 (ISBI labels: 255 = cell)."""
    labels = np.full((20, 20), 255, np.uint8)
    labels[:, 10] = 0
    return labels


def _membrane_at(column: int) -> np.ndarray:
    prob = np.ones((20, 20))
    prob[:, column] = 0.0
    return prob


def _gap() -> np.ndarray:
    prob = _membrane_at(10)
    prob[9:11, 10] = 1.0
    return prob


def _extra_row() -> np.ndarray:
    prob = _membrane_at(10)
    prob[5, :10] = 0.0
    return prob


CASES = {
    # case: (prediction, plain err, pixel 1-maxF, split+merge px, Rand N^2)
    "membrane moved to column 11": (_membrane_at(11), 0.100, 0.05263, 0, 0.04912),
    "membrane moved to column 12": (_membrane_at(12), 0.100, 0.05263, 21, 0.14514),
    "2-px gap at rows 9-10": (_gap(), 0.005, 0.00262, 2, 0.33210),
    "extra membrane row 5": (_extra_row(), 0.025, 0.01333, 1, 0.14097),
}


@pytest.mark.parametrize("case", CASES)
def test_plain_error_rate(case):
    prob, plain, *_ = CASES[case]
    assert round(pixel_error_rate(prob, _ground_truth()), 3) == plain


@pytest.mark.parametrize("case", CASES)
def test_pixel_error_is_one_minus_max_f(case):
    prob, _, pixel, *_ = CASES[case]
    error, threshold = pixel_error(prob, _ground_truth())
    assert round(error, 5) == pixel
    assert threshold == 0.0  # binary maps: every threshold below 1 gives the same F


@pytest.mark.parametrize("case", CASES)
def test_split_plus_merge_pixels(case):
    prob, _, _, split_merge, _ = CASES[case]
    result = warping_error(prob, _ground_truth())
    assert result["split"] + result["merge"] == split_merge
    assert result["warping_error"] == pytest.approx(split_merge / 400)


@pytest.mark.parametrize("case", CASES)
def test_rand_error_n2(case):
    prob, *_, rand = CASES[case]
    error, _ = rand_error(prob, _ground_truth())
    assert round(error, 5) == rand


def test_merge_case_hand_check():
    """1 - 2 * 72400 / (72400 + 144400), as printed under the table."""
    error, _ = rand_error(_gap(), _ground_truth())
    assert error == pytest.approx(1 - 2 * 72400 / (72400 + 144400), abs=1e-12)


def test_split_and_merge_cases_are_classified_as_such():
    assert warping_error(_gap(), _ground_truth())["merge"] == 2
    assert warping_error(_extra_row(), _ground_truth())["split"] == 1
    column_12 = warping_error(_membrane_at(12), _ground_truth())
    assert (column_12["merge"], column_12["split"]) == (20, 1)


def test_the_table_in_docs_is_these_cases():
    """docs/metrics.md prints the table these tests check: the two must not drift apart."""
    text = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    section = text.split("## Worked cases")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    rows = [line.strip("| ").split(" | ") for line in lines[1:]]  # below the heading row
    printed = {
        next(case for case in CASES if name.strip().startswith(case)): (
            float(plain),
            float(pixel),
            int(split_merge.split()[0]),
            float(rand),
        )
        for name, plain, pixel, split_merge, rand in (map(str.strip, row) for row in rows)
    }
    assert printed == {case: tuple(values[1:]) for case, values in CASES.items()}


@pytest.mark.parametrize(
    ("case", "split", "merge"),
    [
        # 200- and 180-px cells in one proposal: FP = 380^2 - (200^2 + 180^2) = 72000 of 144400 together
        ("2-px gap at rows 9-10", 0.0, 0.49861),
        # the 200-px cell cut into 50 + 140 px and 10 boundary singletons: FN = 17890 of 72400 pairs
        ("extra membrane row 5", 0.24710, 0.0),
    ],
)
def test_rand_error_split_into_its_split_and_merge_parts(case, split, merge):
    scores = isbi_scores(CASES[case][0], _ground_truth())
    assert round(scores["rand_split"], 5) == split and round(scores["rand_merge"], 5) == merge
