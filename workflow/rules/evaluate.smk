rule evaluate:
    input:
        prob=f"{RESULTS}/pred/{HELD_OUT}.ome.zarr",
        seg=f"{RESULTS}/seg/{HELD_OUT}.ome.zarr",
        data=f"{RESULTS}/data.ome.zarr",
    output:
        metrics=f"{RESULTS}/eval/metrics.csv",
        per_threshold=f"{RESULTS}/eval/metrics_per_threshold.csv",
        per_slice=f"{RESULTS}/eval/metrics_per_slice.csv",
    log:
        f"{LOGS}/evaluate.log",
    benchmark:
        f"{LOGS}/evaluate.benchmark.tsv"
    conda:
        "../../envs/unet-core.yaml"
    threads: config["threads"]["evaluate"]
    resources:
        mem_mb=memory_per_attempt(8000),
        runtime=120,
    shell:
        "unet-core evaluate {input.prob:q} {input.data:q} --out {output.metrics:q}"
        " --segmentation {input.seg:q} --threads {threads} > {log:q} 2>&1"
