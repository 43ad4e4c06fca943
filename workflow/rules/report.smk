import json

from unet_core.report_figures import report_figures, volume_figure_name

REPORT = f"{RESULTS}/report"
# Figure stems written by `unet-core report`: those of the labels' kind, then one per extra volume.
VOLUME_FIGURES = [volume_figure_name(v) for v in VOLUMES["name"]]
REPORT_FIGURES = [*report_figures(LABELS_KIND), *VOLUME_FIGURES]
# Where each figure goes in Snakemake's report (category, subcategory); captions: ../report/<name>.rst.
FIGURE_CATEGORIES = {
    "held_out": ("Evaluation", "Held-out slices"),
    "thresholds": ("Evaluation", "Thresholds"),
    "per_slice": ("Evaluation", "Per slice"),
    "training": ("Training", None),
    "cells": ("Evaluation", "Held-out frames"),
    "per_frame": ("Evaluation", "Per frame"),
    "weight_map": ("Training", "Weight map"),
}
FIGURE_OUTPUTS = {
    name: report(
        f"{REPORT}/figures/{name}.png",
        caption=f"../report/{name}.rst",
        category=FIGURE_CATEGORIES[name][0],
        subcategory=FIGURE_CATEGORIES[name][1],
    )
    for name in report_figures(LABELS_KIND)
}


rule report:
    input:
        # Input function (a lambda: the linter wants named functions in common.smk): the unlabelled
        # volumes of volumes.tsv, shown as orthogonal views.
        unpack(
            lambda wildcards: {
                "pred_volumes": expand(f"{RESULTS}/pred/{{volume}}.ome.zarr", volume=VOLUMES["name"]),
                "seg_volumes": expand(f"{RESULTS}/seg/{{volume}}.ome.zarr", volume=VOLUMES["name"]),
            }
        ),
        metrics=f"{RESULTS}/eval/metrics.csv",
        per_threshold=f"{RESULTS}/eval/metrics_per_threshold.csv",
        per_slice=f"{RESULTS}/eval/metrics_per_slice.csv",
        train_log=f"{RESULTS}/model/train_log.csv",
        models=get_models(),
        package=f"{RESULTS}/model/bioimageio.zip",
        crossval=get_crossval_outputs(),
        data=f"{RESULTS}/data.ome.zarr",
        prob=f"{RESULTS}/pred/{HELD_OUT}.ome.zarr",
        seg=f"{RESULTS}/seg/{HELD_OUT}.ome.zarr",
    output:
        index=report(f"{REPORT}/index.html", caption="../report/index.rst", category="Report"),
        table=report(
            f"{REPORT}/metrics.csv",
            caption="../report/metrics.rst",
            category="Evaluation",
            subcategory="Tables",
        ),
        tex=report(
            f"{REPORT}/metrics.tex",
            caption="../report/metrics_tex.rst",
            category="Evaluation",
            subcategory="Tables",
        ),
        **FIGURE_OUTPUTS,
        volumes=report(
            expand(f"{REPORT}/figures/{{name}}.png", name=VOLUME_FIGURES),
            caption="../report/volume.rst",
            category="Prediction",
            subcategory="Orthogonal views",
        ),
        pdfs=expand(f"{REPORT}/figures/{{name}}.pdf", name=REPORT_FIGURES),
        provenance=report(
            f"{REPORT}/provenance.json", caption="../report/provenance.rst", category="Provenance"
        ),
    log:
        f"{LOGS}/report.log",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.index),
        title=f"U-Net on {config['dataset']}",
        config_json=json.dumps(config, sort_keys=True),
        # config files and the volume sheet the workflow read, checksummed into provenance.json
        configfiles=[*workflow.configfiles, *([config["volumes"]] if config.get("volumes") else [])],
        repo=workflow.basedir,
        logs=LOGS,
        benchmarks=get_benchmark_files(),
        crossval=" ".join(f"--crossval {shlex.quote(path)}" for path in get_crossval_outputs()),
    conda:
        "../../envs/unet-core.yaml"
    threads: 1
    resources:
        mem_mb=memory_per_attempt(4000),
        runtime=30,
    shell:
        "unet-core report {params.out_dir:q} --metrics {input.metrics:q}"
        " --per-threshold {input.per_threshold:q} --per-slice {input.per_slice:q}"
        " --train-log {input.train_log:q} --model {input.models:q} --package {input.package:q}"
        " --data {input.data:q}"
        " --prediction {input.prob:q} --segmentation {input.seg:q}"
        " --pred-volumes {input.pred_volumes:q} --seg-volumes {input.seg_volumes:q}"
        " --config-json {params.config_json:q} --configfiles {params.configfiles:q}"
        " --repo {params.repo:q} --logs {params.logs:q} --benchmarks {params.benchmarks:q}"
        " --title {params.title:q} {params.crossval} > {log:q} 2>&1"
