"""One-time set-up so that `snakemake --profile slurm` (and `--profile local`) find our profiles.

Snakemake looks a profile name up in the user's Snakemake config folder (``$XDG_CONFIG_HOME/snakemake`` or
``~/.config/snakemake``); this links the repository's ``profiles/<name>`` folders there, so later edits of the
repository's profiles take effect without copying.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def user_profile_dir() -> Path:
    """The folder in which Snakemake looks profile names up for this user."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "snakemake"


def install_profiles(
    repository: str | os.PathLike, *, names: tuple[str, ...] = ("slurm", "local")
) -> list[Path]:
    """Link ``<repository>/profiles/<name>`` to ``<user profile dir>/<name>`` for every name.

    An existing link is replaced; an existing real folder is left alone (it is someone's own profile).
    """
    source_root = Path(repository).resolve() / "profiles"
    target_root = user_profile_dir()
    target_root.mkdir(parents=True, exist_ok=True)
    linked = []
    for name in names:
        source, target = source_root / name, target_root / name
        if not (source / "config.yaml").is_file():
            raise ValueError(
                f"{source}: no profile here; run this from the unet-core repository or pass --repository"
            )
        if target.exists() and not target.is_symlink():
            raise ValueError(f"{target} exists and is not a link; move it away to install the {name} profile")
        if target.is_symlink():
            target.unlink()
        target.symlink_to(source, target_is_directory=True)
        log.info("linked %s -> %s", target, source)
        linked.append(target)
    return linked
