"""The cross-validation summary: mean and spread over folds, the mean validation curve."""

import pandas as pd
import pytest

from unet_core.crossval import write_summary


def _fold(tmp_path, k, rand, iterations=(2, 4)):
    folder = tmp_path / f"fold{k}"
    folder.mkdir()
    rows = [
        (method, metric, value, 0.5, f"{2 * k}:{2 * k + 2}")
        for method in ("unet", "segmentation")
        for metric, value in (("pixel_error", 0.1), ("rand_error", rand), ("warping_error", 0.001))
    ]
    pd.DataFrame(rows, columns=["method", "metric", "value", "threshold", "slices"]).to_csv(
        folder / "metrics.csv", index=False
    )
    log = pd.DataFrame({"iteration": list(iterations), "loss": 1.0, "val_rand_error": [rand + 0.1, rand]})
    log.to_csv(folder / "train_log.csv", index=False)
    return folder / "metrics.csv", folder / "train_log.csv"


def test_mean_spread_and_curve_over_folds(tmp_path):
    metrics, logs = zip(*(_fold(tmp_path, k, rand) for k, rand in enumerate((0.1, 0.2, 0.6))), strict=True)
    summary = write_summary(tmp_path / "cv", metrics, logs).set_index(["method", "metric"])
    row = summary.loc[("unet", "rand_error")]
    assert row["mean"] == pytest.approx(0.3) and row["std"] == pytest.approx(pd.Series([0.1, 0.2, 0.6]).std())
    assert (row["min"], row["max"], row["folds"]) == (0.1, 0.6, 3)
    curve = pd.read_csv(tmp_path / "cv" / "curve.csv")
    assert curve["val_rand_error_mean"].tolist() == pytest.approx([0.4, 0.3])
    folds = pd.read_csv(tmp_path / "cv" / "folds.csv")
    assert sorted(folds["slices"].unique()) == ["0:2", "2:4", "4:6"] and len(folds) == 18


def test_only_the_iterations_every_fold_logged_are_averaged(tmp_path):
    a = _fold(tmp_path, 0, 0.1, iterations=(2, 4))
    b = _fold(tmp_path, 1, 0.2, iterations=(2, 6))
    write_summary(tmp_path / "cv", [a[0], b[0]], [a[1], b[1]])
    assert pd.read_csv(tmp_path / "cv" / "curve.csv")["iteration"].tolist() == [2]


@pytest.mark.parametrize("n_logs", [1, 2])
def test_too_few_folds_or_unpaired_files_are_refused(tmp_path, n_logs):
    metrics, logs = zip(*(_fold(tmp_path, k, 0.1) for k in range(2)), strict=True)
    given = metrics[:1] if n_logs == 2 else metrics
    with pytest.raises(
        ValueError, match="needs the metrics.csv and train_log.csv of each of at least two folds"
    ):
        write_summary(tmp_path / "cv", given, logs[:n_logs])
    assert not (tmp_path / "cv").exists()


def test_a_file_that_is_not_a_metrics_table_is_named(tmp_path):
    metrics, logs = zip(*(_fold(tmp_path, k, 0.1) for k in range(2)), strict=True)
    metrics[1].write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="fold1/metrics.csv"):
        write_summary(tmp_path / "cv", metrics, logs)


def test_the_report_table_shows_the_metrics_of_the_label_kind():
    from unet_core.report._tables import crossval_table_html

    rows = [("unet", "seg", 0.8, 0.05, 0.7, 0.9, 3), ("unet", "dice", 0.9, 0.01, 0.88, 0.91, 3)]
    cells = pd.DataFrame(rows, columns=["method", "metric", "mean", "std", "min", "max", "folds"])
    page = crossval_table_html(cells)
    assert "<th>SEG</th>" in page and "Rand error" not in page and "0.8000 &plusmn; 0.0500" in page
    membranes = cells.assign(metric=["rand_error", "pixel_error"])
    page = crossval_table_html(membranes)
    assert "<th>Rand error</th>" in page and "SEG" not in page
