# Cross-validation (config crossval.folds = K >= 2): fold k trains on the labelled slices outside its
# contiguous run (unet_core.folds), as many models as the recipe's ensemble, then predicts the store and is
# scored on its run; `crossval` writes the mean and spread of every metric over the folds and the mean
# validation curve (of member 0).
FOLDS = config["crossval"]["folds"]


use rule train as train_fold with:
    output:
        best=f"{RESULTS}/cv/fold{{fold}}/model/best.pt",
        last=f"{RESULTS}/cv/fold{{fold}}/model/last.pt",
        log_csv=f"{RESULTS}/cv/fold{{fold}}/model/train_log.csv",
    log:
        f"{LOGS}/cv/train.fold{{fold}}.log",
    benchmark:
        f"{LOGS}/cv/train.fold{{fold}}.benchmark.tsv"
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.best),
        args=get_fold_train_args,


# Further members of a fold's ensemble (config `ensemble` > 1): the fold's training with another seed.
use rule train_fold as train_fold_member with:
    output:
        best=f"{RESULTS}/cv/fold{{fold}}/model/member{{member}}/best.pt",
        last=f"{RESULTS}/cv/fold{{fold}}/model/member{{member}}/last.pt",
        log_csv=f"{RESULTS}/cv/fold{{fold}}/model/member{{member}}/train_log.csv",
    log:
        f"{LOGS}/cv/train.fold{{fold}}.member{{member}}.log",
    benchmark:
        f"{LOGS}/cv/train.fold{{fold}}.member{{member}}.benchmark.tsv"
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.best),
        args=get_fold_member_train_args,


# A fold is scored with its last checkpoints (every ensemble member's), the ones its recipe ships
# (crossval.final trains as long and keeps the last): best.pt was chosen on these very slices, which would
# make the figures optimistic.
rule predict_fold:
    input:
        model=get_fold_models,
        data=f"{RESULTS}/data.ome.zarr",
    output:
        prob=directory(f"{RESULTS}/cv/fold{{fold}}/pred.ome.zarr"),
    log:
        f"{LOGS}/cv/predict.fold{{fold}}.log",
    params:
        args=cli_args("predict"),
    conda:
        "../../envs/unet-core.yaml"
    threads: config["threads"]["predict"]
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=memory_per_attempt(8000),
        runtime=240,
    shell:
        "unet-core predict {input.model:q} {input.data:q} {output.prob:q} --threads {threads} {params.args}"
        " > {log:q} 2>&1"


rule segment_fold:
    input:
        prob=f"{RESULTS}/cv/fold{{fold}}/pred.ome.zarr",
    output:
        seg=directory(f"{RESULTS}/cv/fold{{fold}}/seg.ome.zarr"),
    log:
        f"{LOGS}/cv/segment.fold{{fold}}.log",
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


rule evaluate_fold:
    input:
        prob=f"{RESULTS}/cv/fold{{fold}}/pred.ome.zarr",
        seg=f"{RESULTS}/cv/fold{{fold}}/seg.ome.zarr",
        data=f"{RESULTS}/data.ome.zarr",
    output:
        metrics=f"{RESULTS}/cv/fold{{fold}}/eval/metrics.csv",
        per_threshold=f"{RESULTS}/cv/fold{{fold}}/eval/metrics_per_threshold.csv",
        per_slice=f"{RESULTS}/cv/fold{{fold}}/eval/metrics_per_slice.csv",
    log:
        f"{LOGS}/cv/evaluate.fold{{fold}}.log",
    params:
        folds=FOLDS,
    conda:
        "../../envs/unet-core.yaml"
    threads: config["threads"]["evaluate"]
    resources:
        mem_mb=memory_per_attempt(8000),
        runtime=120,
    shell:
        "unet-core evaluate {input.prob:q} {input.data:q} --out {output.metrics:q}"
        " --segmentation {input.seg:q} --slices fold:{wildcards.fold}/{params.folds} --threads {threads}"
        " > {log:q} 2>&1"


rule crossval:
    input:
        metrics=expand(f"{RESULTS}/cv/fold{{fold}}/eval/metrics.csv", fold=range(FOLDS)),
        train_logs=expand(f"{RESULTS}/cv/fold{{fold}}/model/train_log.csv", fold=range(FOLDS)),
    output:
        summary=f"{RESULTS}/cv/metrics.csv",
        folds=f"{RESULTS}/cv/folds.csv",
        curve=f"{RESULTS}/cv/curve.csv",
    log:
        f"{LOGS}/cv/crossval.log",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
    conda:
        "../../envs/unet-core.yaml"
    threads: 1
    resources:
        mem_mb=memory_per_attempt(1000),
        runtime=10,
    shell:
        "unet-core crossval {params.out_dir:q} --metrics {input.metrics:q}"
        " --train-logs {input.train_logs:q} > {log:q} 2>&1"
