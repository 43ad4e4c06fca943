rule segment:
    input:
        prob=f"{RESULTS}/pred/{{volume}}.ome.zarr",
    output:
        seg=directory(f"{RESULTS}/seg/{{volume}}.ome.zarr"),
    log:
        f"{LOGS}/segment/{{volume}}.log",
    params:
        args=cli_args("segment"),
    conda:
        "../../envs/unet-core.yaml"
    threads: config["threads"]["segment"]
    resources:
        mem_mb=memory_per_attempt(8000),
        runtime=240,
    shell:
        "unet-core segment {input.prob:q} {output.seg:q} --threads {threads} {params.args} > {log:q} 2>&1"
