# U-Net segmentation of EM volumes (Ronneberger, Fischer, Brox 2015) as a Snakemake workflow.
# No logic here: configuration, rule files in DAG order, and the final targets.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/crossval.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        get_final_outputs(),
    default_target: True
