# The trained model (an ensemble: one package of its members' mean, as predict uses it) as a bioimage.io
# model package that ilastik, Fiji (deepImageJ) and napari run; the report checksums it.
rule export:
    input:
        models=get_models(),
        data=f"{RESULTS}/data.ome.zarr",
        metrics=f"{RESULTS}/eval/metrics.csv",
    output:
        package=f"{RESULTS}/model/bioimageio.zip",
    log:
        f"{LOGS}/export.log",
    benchmark:
        f"{LOGS}/export.benchmark.tsv"
    params:
        args=cli_args("export"),
    conda:
        "../../envs/unet-core.yaml"
    threads: config["threads"]["export"]
    resources:
        mem_mb=memory_per_attempt(8000),
        runtime=60,
    shell:
        "unet-core export {input.models:q} {output.package:q} --data {input.data:q}"
        " --metrics {input.metrics:q} --threads {threads} {params.args} > {log:q} 2>&1"
