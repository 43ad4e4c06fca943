rule prepare:
    output:
        data=directory(f"{RESULTS}/data.ome.zarr"),
    log:
        f"{LOGS}/prepare.log",
    benchmark:
        f"{LOGS}/prepare.benchmark.tsv"
    params:
        args=cli_args("prepare"),
    conda:
        "../../envs/unet-core.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "unet-core prepare {output.data:q} {params.args} > {log:q} 2>&1"
