# prepare.raw and prepare.labels as input files (relative to prepare.data_dir, as unet-core resolves them;
# the HDF5 file of file.h5:/dataset), so that changed data reruns prepare; none for the synthetic volume.
# A folder (Zarr, slices) counts by its own modification time, which files rewritten inside it leave
# alone: the README says to touch the folder then.
PREPARE_INPUT = {
    key: volume_file(os.path.join(config["prepare"].get("data_dir", ""), config["prepare"][key]))
    for key in ("raw", "labels")
    if config["prepare"].get(key)
}


rule prepare:
    input:
        **PREPARE_INPUT,
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
    threads: config["threads"]["prepare"]
    resources:
        mem_mb=memory_per_attempt(4000),
        runtime=60,
    shell:
        "unet-core prepare {output.data:q} --threads {threads} {params.args} > {log:q} 2>&1"
