# Prediction is scattered into `predict_shards` jobs (separate GPU jobs on SLURM), each writing whole,
# disjoint chunks of a shared work store; `predict` gathers them once every chunk is written.
# A killed shard re-run continues with its missing chunks.
SHARDS = config["predict_shards"]


rule predict_shard:
    input:
        model=get_models(),
        volume=get_volume_file,
    output:
        # temp: gone once gathered, so a gather that must run again brings its shards back with it
        flag=temp(touch(f"{RESULTS}/pred/.shards/{{volume}}/{{shard}}-of-{SHARDS}.done")),
    log:
        f"{LOGS}/predict/{{volume}}.{{shard}}-of-{SHARDS}.log",
    benchmark:
        f"{LOGS}/predict/{{volume}}.{{shard}}-of-{SHARDS}.benchmark.tsv"
    params:
        prob=f"{RESULTS}/pred/{{volume}}.ome.zarr",
        volume=get_volume_path,
        shards=SHARDS,
        args=cli_args("predict"),
        metadata=get_volume_metadata_args,
    conda:
        "../../envs/unet-core.yaml"
    threads: config["threads"]["predict"]
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=lambda wc, input, attempt: get_shard_resources(wc, input, attempt)["mem_mb"],
        runtime=lambda wc, input, attempt: get_shard_resources(wc, input, attempt)["runtime"],
    shell:
        "unet-core predict {input.model:q} {params.volume:q} {params.prob:q} --shard {wildcards.shard}/{params.shards}"
        " --threads {threads} {params.args} {params.metadata} > {log:q} 2>&1"


rule predict:
    input:
        shards=expand(f"{RESULTS}/pred/.shards/{{{{volume}}}}/{{shard}}-of-{SHARDS}.done", shard=range(SHARDS)),
        model=get_models(),
        volume=get_volume_file,
    output:
        prob=directory(f"{RESULTS}/pred/{{volume}}.ome.zarr"),
    log:
        f"{LOGS}/predict/{{volume}}.gather.log",
    conda:
        "../../envs/unet-core.yaml"
    threads: 1
    resources:
        mem_mb=memory_per_attempt(1000),
        runtime=30,
    shell:
        "unet-core predict {input.model:q} {input.volume:q} {output.prob:q} --gather > {log:q} 2>&1"
