rule report:
    input:
        metrics=f"{RESULTS}/eval/metrics.csv",
        train_log=f"{RESULTS}/model/train_log.csv",
        data=f"{RESULTS}/data.ome.zarr",
        prob=f"{RESULTS}/pred/{HELD_OUT}.ome.zarr",
        seg=f"{RESULTS}/seg/{HELD_OUT}.ome.zarr",
    output:
        index=report(
            f"{RESULTS}/report/index.html",
            caption="../report/index.rst",
            category="Report",
        ),
    log:
        f"{LOGS}/report.log",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.index),
        title=f"U-Net on {config['dataset']}",
    conda:
        "../../envs/unet-core.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "unet-core report {params.out_dir:q} --metrics {input.metrics:q} --train-log {input.train_log:q}"
        " --data {input.data:q} --prediction {input.prob:q} --segmentation {input.seg:q}"
        " --title {params.title:q} > {log:q} 2>&1"
