import os
import shlex

from snakemake.utils import validate

from unet_core.cli import VALIDATION_SEGMENT, config_flags
from unet_core.paths import volume_file
from unet_core.sheets import HELD_OUT, read_volume_sheet


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = f"{config['results']}/{config['dataset']}"
LOGS = f"{config['logs']}/{config['dataset']}"
# The volume sheet's rows, indexed by name; HELD_OUT (the prepared store) is predicted and scored too.
VOLUMES = read_volume_sheet(config["volumes"])
# What the prepared store's labels are: membranes (ISBI errors) or cells (SEG). The synthetic volume's are
# membranes whatever the config says.
LABELS_KIND = config["prepare"].get("labels_kind", "binary") if config["prepare"].get("raw") else "binary"


wildcard_constraints:
    volume="[A-Za-z0-9_.-]+",
    shard="[0-9]+",
    member="[1-9][0-9]*",
    fold="[0-9]+",


def cli_args(section, **overrides):
    """Config section (with ``overrides``) -> '--key value' flags of its unet-core subcommand, shell-quoted."""
    return " ".join(shlex.quote(a) for a in config_flags(config.get(section, {}) | overrides))


def memory_per_attempt(mb):
    """mem_mb that grows with each retry (the profile's `retries`): a rule's own value overrides the
    profile's default-resources, so a fixed one would fail out of memory again and again."""

    def mem_mb(wildcards, attempt):
        return mb * attempt

    return mem_mb


def member_checkpoints(model_dir, name):
    """Checkpoint ``name`` of every ensemble member: member 0 in model_dir, member k in
    model_dir/member<k>/."""
    return [f"{model_dir}/{name}"] + [f"{model_dir}/member{k}/{name}" for k in range(1, config["ensemble"])]


def get_models():
    """best.pt of every ensemble member of the shipped model."""
    return member_checkpoints(f"{RESULTS}/model", "best.pt")


def get_train_args(**overrides):
    """The train section as flags: for cells also the segment section's, which validation segments with;
    the shipped model on every labelled slice without validation once cross-validation chose the recipe
    (crossval.final)."""
    final = {"fold": "all"} if config["crossval"]["final"] else {}
    return fold_train_args(**final, **overrides)


def fold_train_args(**overrides):
    """The train section (with ``overrides``) as flags, and for cells the segment section's."""
    args = cli_args("train", **overrides)
    if LABELS_KIND != "instances":
        return args
    segment = config_flags(config.get("segment", {}), prefix=VALIDATION_SEGMENT)
    return " ".join([args, *(shlex.quote(a) for a in segment)])


def member_seed(wildcards):
    """Member k trains exactly as member 0 but with seed + k (config.yaml always sets train.seed)."""
    return config["train"]["seed"] + int(wildcards.member)


def fold_of(wildcards):
    """Cross-validation fold k of crossval.folds as train's --fold: the labelled slices but its run train,
    the run validates."""
    return f"{wildcards.fold}/{config['crossval']['folds']}"


def get_member_train_args(wildcards):
    return get_train_args(seed=member_seed(wildcards))


def get_fold_train_args(wildcards):
    return fold_train_args(fold=fold_of(wildcards))


def get_fold_member_train_args(wildcards):
    return fold_train_args(fold=fold_of(wildcards), seed=member_seed(wildcards))


def get_fold_models(wildcards):
    """last.pt of every ensemble member of fold k: the checkpoint the shipped recipe keeps, as a fold is
    scored with what the recipe ships."""
    return member_checkpoints(f"{RESULTS}/cv/fold{wildcards.fold}/model", "last.pt")


def get_volume_path(wildcards):
    """The volume as unet-core reads it (file.h5:/dataset for HDF5)."""
    if wildcards.volume == HELD_OUT:
        return f"{RESULTS}/data.ome.zarr"
    return VOLUMES.loc[wildcards.volume, "path"]


def get_sheet_voxel_size(wildcards):
    """The sheet's voxel_size column (z, y, x in prepare.unit) as strings; empty: the file's own."""
    size = "" if wildcards.volume == HELD_OUT else VOLUMES.loc[wildcards.volume].get("voxel_size", "")
    return size.split(",") if size else []


def get_volume_metadata_args(wildcards):
    """--voxel-size (in prepare.unit, when set) from the sheet's voxel_size column; none: the file's own."""
    size = get_sheet_voxel_size(wildcards)
    if not size:
        return ""
    unit = config["prepare"].get("unit")
    return shlex.join(["--voxel-size", *size] + (["--unit", unit] if unit else []))


def get_volume_file(wildcards):
    """The file or folder holding the volume, which Snakemake tracks as input."""
    return volume_file(get_volume_path(wildcards))


def get_benchmark_files():
    """The benchmark files of this configuration's jobs (runs with other shard counts, volumes or ensemble
    sizes leave theirs in the same folder), from the rules' own patterns: call it after they are defined."""
    return [
        rules.prepare.benchmark,
        rules.train.benchmark,
        rules.evaluate.benchmark,
        rules.export.benchmark,
        *expand(rules.train_member.benchmark, member=range(1, config["ensemble"])),
        *expand(rules.train_fold.benchmark, fold=range(config["crossval"]["folds"])),
        *expand(
            rules.train_fold_member.benchmark,
            fold=range(config["crossval"]["folds"]),
            member=range(1, config["ensemble"]),
        ),
        *expand(
            rules.predict_shard.benchmark,
            volume=[HELD_OUT, *VOLUMES["name"]],
            shard=range(config["predict_shards"]),
        ),
    ]


def get_final_outputs():
    volumes = [HELD_OUT, *VOLUMES["name"]]
    return [
        f"{RESULTS}/eval/metrics.csv",
        f"{RESULTS}/report/index.html",
        f"{RESULTS}/model/bioimageio.zip",
        *(f"{RESULTS}/seg/{v}.ome.zarr" for v in volumes),
        *get_crossval_outputs(),
    ]


def get_crossval_outputs():
    """The cross-validation summary, when crossval.folds asks for one."""
    return [f"{RESULTS}/cv/metrics.csv"] if config["crossval"]["folds"] >= 2 else []


def get_shard_resources(wildcards, input, attempt):
    from unet_core.predict import shard_resources

    models = [input.model] if isinstance(input.model, str) else list(input.model)
    for path in [input.volume, *models]:  # not made yet: Snakemake decides once they exist
        if not os.path.exists(path):
            raise FileNotFoundError(2, "not created yet", path)
    size = get_sheet_voxel_size(wildcards)
    return shard_resources(
        get_volume_path(wildcards),
        shards=config["predict_shards"],
        block_shape=config["predict"].get("block_shape", [1, 512, 512]),
        mvox_per_minute=config["predict_mvox_per_minute"],
        attempt=attempt,
        models=models,
        voxel_size=[float(v) for v in size] if size else None,
        unit=config["prepare"].get("unit") if size else None,
        match_pixel_size=config["predict"].get("match_pixel_size", True),
    )
