rule predict:
    input:
        model=f"{RESULTS}/model/best.pt",
        volume=get_volume_path,
    output:
        prob=directory(f"{RESULTS}/pred/{{volume}}.ome.zarr"),
    log:
        f"{LOGS}/predict/{{volume}}.log",
    benchmark:
        f"{LOGS}/predict/{{volume}}.benchmark.tsv"
    params:
        args=cli_args("predict"),
    conda:
        "../../envs/unet-core.yaml"
    threads: config["threads"]["predict"]
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=16000,
        runtime=720,
    shell:
        "unet-core predict {input.model:q} {input.volume:q} {output.prob:q} --threads {threads}"
        " {params.args} > {log:q} 2>&1"
