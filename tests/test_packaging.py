"""The conda environment lists the same dependencies as pyproject.toml."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}


def _name_and_spec(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*(.*)$", requirement.strip()).groups()
    return CONDA_NAMES.get(name, name).lower(), spec.replace(" ", "")


def test_conda_env_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = dict(_name_and_spec(r) for r in project["dependencies"])
    env = yaml.safe_load((ROOT / "envs" / "unet-core.yaml").read_text())
    listed = dict(_name_and_spec(d) for d in env["dependencies"] if isinstance(d, str))
    listed.pop("python"), listed.pop("pip")
    assert listed == expected
