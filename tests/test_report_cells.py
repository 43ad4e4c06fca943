"""The report of a store of instance labels: SEG beside the paper's Table 2, panels like Figs. 3 and 4."""

import numpy as np
import pandas as pd
import pytest

from unet_core import io
from unet_core.dataset import TrainingStore
from unet_core.evaluate import evaluate_files
from unet_core.report import ReportInputs, ReportProvenance, build_report, read_eval_metrics, training_figure
from unet_core.report._cells import border_frame, cell_jaccard, cells_figure
from unet_core.report_figures import CELL_FIGURES, report_figures


@pytest.fixture(scope="module")
def cell_run(cell_store, tmp_path_factory):
    """Evaluate's CSVs and a training log of a run on the cell store (prediction: the target as P)."""
    folder = tmp_path_factory.mktemp("cell_run")
    store = TrainingStore.open(cell_store)
    io.write_image(folder / "pred.ome.zarr", np.where(store.cells[...] > 0, 0.95, 0.05).astype(np.float32))
    found = store.instances[...].astype(np.int32)
    found[2][found[2] == 3] = 0  # one cell of frame 2 missed
    io.write_image(folder / "seg.ome.zarr", found, label=True)
    evaluate_files(
        folder / "pred.ome.zarr", cell_store, folder / "metrics.csv", segmentation=folder / "seg.ome.zarr"
    )
    log = pd.DataFrame({"iteration": [2, 4, 6], "loss": [0.9, 0.7, 0.6], "val_seg": [0.3, 0.8, 0.5]})
    log.to_csv(folder / "train_log.csv", index=False)
    return folder


def _inputs(folder, store):
    return ReportInputs(
        metrics_csv=folder / "metrics.csv",
        train_log=folder / "train_log.csv",
        data=store,
        prediction=folder / "pred.ome.zarr",
        segmentation=folder / "seg.ome.zarr",
    )


def test_cell_report_puts_seg_beside_table_2_with_the_cell_figures(cell_run, cell_store, tmp_path):
    config = {"train": {"select_metric": "seg"}}
    index = build_report(
        tmp_path / "report", _inputs(cell_run, cell_store), provenance=ReportProvenance(config=config)
    )
    report = index.parent
    assert {p.stem for p in (report / "figures").iterdir()} == set(CELL_FIGURES)
    table = pd.read_csv(report / "metrics.csv").set_index("method")
    metrics = pd.read_csv(cell_run / "metrics.csv").set_index(["method", "metric"])["value"]
    for method in ("unet", "segmentation", "variance_watershed"):
        for name in ("seg", "foreground_iou", "dice"):
            assert table.loc[method, name] == pytest.approx(metrics[method, name], nan_ok=True)
    assert table.loc["segmentation", "seg"] == pytest.approx(5 / 6)  # 6 reference cells, one missed
    assert table.loc["u-net (2015), DIC-HeLa", "seg"] == 0.7756
    assert table.loc["second best (2015), PhC-U373", "seg"] == 0.83
    page = index.read_text()
    assert "Scores on held-out frames" in page and "hidden test sequences" in page
    assert "Frames 3 annotate only some cells" in page
    tex = (report / "metrics.tex").read_text()
    assert r"\toprule" in tex and "u-net (2015), DIC-HeLa & 0.7756" in tex
    assert tex.count(r"\midrule") == 2  # header | ours | published


def test_cell_jaccard_paints_each_reference_cell_with_its_seg_score():
    reference = np.array([[1, 1, 1, 1, 0, 2, 2]])
    labels = np.array([[4, 4, 4, 0, 0, 5, 0]])  # cell 1: 3 of 4 px, J = 3/4; cell 2: half, no match
    painted = cell_jaccard(labels, reference)
    assert painted[0, :4].tolist() == [0.75] * 4 and painted[0, 5:].tolist() == [0.0, 0.0]
    assert np.isnan(painted[0, 4])


def test_weight_map_is_drawn_from_the_training_frame_with_most_borders(cell_store):
    store = TrainingStore.open(cell_store)
    assert border_frame(store) in (0, 1)
    borders = [((store.instances[z] > 0) & (store.cells[z] == 0)).sum() for z in (0, 1)]
    assert border_frame(store) == int(np.argmax(borders))


def test_cells_figure_refuses_a_segmentation_of_other_frames(cell_run, cell_store, tmp_path):
    io.write_image(tmp_path / "other.ome.zarr", np.zeros((2, 64, 96), np.int32), label=True)
    with pytest.raises(ValueError, match=r"other.ome.zarr: shape \(2, 64, 96\) differs from"):
        cells_figure(cell_store, tmp_path / "other.ome.zarr", [2])


def test_training_figure_marks_the_highest_seg():
    log = pd.DataFrame({"iteration": [2, 4, 6], "loss": [0.9, 0.7, 0.6], "val_seg": [0.3, 0.8, 0.5]})
    figure = training_figure(log, select_metric="seg")
    assert figure.axes[0].lines[-1].get_xdata()[0] == 4  # the dashed line: best.pt
    assert "highest val_seg" in figure.axes[0].get_legend().get_texts()[0].get_text()


def test_metrics_of_cells_lacking_seg_are_refused(tmp_path):
    (tmp_path / "m.csv").write_text("method,metric,value,threshold,slices\nunet,dice,0.5,,0:1\n")
    with pytest.raises(ValueError, match=r"method 'unet' lacks metrics \['foreground_iou', 'seg'\]"):
        read_eval_metrics(tmp_path / "m.csv", required=("seg", "foreground_iou", "dice"))


def test_figures_depend_on_the_kind_of_labels():
    assert "held_out" in report_figures("binary") and "weight_map" in report_figures("instances")


def test_an_exported_package_quotes_seg_for_cells(cell_run):
    from unet_core.export._docs import metrics_markdown

    table = metrics_markdown(pd.read_csv(cell_run / "metrics.csv")).splitlines()
    assert table[0] == "| method | SEG | Foreground IoU | Dice |"
    assert table[3].startswith("| U-Net + segment (ours) | 0.8333 |")
