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
        args=train_args(),
    conda:
        "../../envs/unet-core.yaml"
    threads: config["threads"]["train"]
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=memory_per_attempt(16000),
        runtime=1440,
    shell:
        "unet-core train {input.data:q} {params.out_dir:q} --threads {threads} {params.args}"
        " > {log:q} 2>&1"


# Further members of an ensemble (config `ensemble` > 1): the same training with another seed.
use rule train as train_member with:
    output:
        best=f"{RESULTS}/model/member{{member}}/best.pt",
        last=f"{RESULTS}/model/member{{member}}/last.pt",
        log_csv=f"{RESULTS}/model/member{{member}}/train_log.csv",
    log:
        f"{LOGS}/train.member{{member}}.log",
    benchmark:
        f"{LOGS}/train.member{{member}}.benchmark.tsv"
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.best),
        args=get_member_train_args,
