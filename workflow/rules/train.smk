rule train:
    input:
        data=f"{RESULTS}/data.ome.zarr",
    output:
        best=f"{RESULTS}/model/best.pt",
        last=f"{RESULTS}/model/last.pt",
        log_csv=f"{RESULTS}/model/train_log.csv",
    log:
        f"{LOGS}/train.log",
    benchmark:
        f"{LOGS}/train.benchmark.tsv"
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.best),
        args=cli_args("train"),
    conda:
        "../../envs/unet-core.yaml"
    threads: config["threads"]["train"]
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=16000,
        runtime=720,
    shell:
        "unet-core train {input.data:q} {params.out_dir:q} --threads {threads} {params.args}"
        " > {log:q} 2>&1"
