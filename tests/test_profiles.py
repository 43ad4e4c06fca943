"""`unet-core install-profiles`: links where Snakemake looks profile names up, all or nothing."""

import logging
from pathlib import Path

import pytest

from unet_core.profiles import install_profiles, user_profile_dir

ROOT = Path(__file__).resolve().parents[1]


def test_profiles_go_where_snakemake_looks_them_up(tmp_path, monkeypatch):
    from snakemake.common import get_appdirs

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config home"))
    assert user_profile_dir() == Path(get_appdirs().user_config_dir) == tmp_path / "config home" / "snakemake"
    linked = install_profiles(ROOT)
    assert [p.resolve() for p in linked] == [ROOT / "profiles" / "slurm", ROOT / "profiles" / "local"]


def test_a_real_folder_stops_the_setup_before_anything_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "snakemake" / "local").mkdir(parents=True)  # someone's own profile
    with pytest.raises(ValueError, match="local exists and is not a link; move it away"):
        install_profiles(ROOT)
    assert not (tmp_path / "snakemake" / "slurm").exists()  # slurm, first in line, was not linked either


def test_replacing_a_link_to_another_profile_says_where_it_pointed(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    own = tmp_path / "dotfiles" / "slurm"
    own.mkdir(parents=True)
    (tmp_path / "snakemake").mkdir()
    (tmp_path / "snakemake" / "slurm").symlink_to(own)
    with caplog.at_level(logging.WARNING):
        install_profiles(ROOT)
    assert f"replacing the link {tmp_path / 'snakemake' / 'slurm'} -> {own}" in caplog.text
    assert (tmp_path / "snakemake" / "slurm").resolve() == ROOT / "profiles" / "slurm"
    caplog.clear()
    install_profiles(ROOT)  # again: its own links are replaced quietly
    assert "replacing" not in caplog.text
