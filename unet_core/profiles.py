"""One-time set-up so that `snakemake --profile slurm` (and `--profile local`) find our profiles.

Snakemake looks a profile name up in the user's Snakemake config folder (`user_profile_dir`); this links
the repository's ``profiles/<name>`` folders there, so later edits of the repository's profiles take effect
without copying.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def user_profile_dir() -> Path:
    """The folder in which Snakemake looks profile names up for this user: its own lookup (platformdirs),
    ``$XDG_CONFIG_HOME/snakemake`` or ``~/.config/snakemake`` on Linux, ``~/Library/Application Support/
    snakemake`` on macOS."""
    from snakemake.common import get_appdirs

    return Path(get_appdirs().user_config_dir)


def install_profiles(
    repository: str | os.PathLike, *, names: tuple[str, ...] = ("slurm", "local")
) -> list[Path]:
    """Link ``<repository>/profiles/<name>`` to ``<user profile dir>/<name>`` for every name.

    Everything is checked before anything changes. An existing link is replaced (with a warning naming
    its old target when that was not this profile); an existing real folder is left alone (it is
    someone's own profile) and stops the set-up.
    """
    source_root = Path(repository).resolve() / "profiles"
    target_root = user_profile_dir()
    pairs = [(source_root / name, target_root / name) for name in names]
    for source, target in pairs:
        if not (source / "config.yaml").is_file():
            raise ValueError(
                f"{source}: no profile here; run this from the unet-core repository or pass --repository"
            )
        if target.exists() and not target.is_symlink():
            raise ValueError(
                f"{target} exists and is not a link; move it away to install the {target.name} profile"
            )
    target_root.mkdir(parents=True, exist_ok=True)
    for source, target in pairs:
        if target.is_symlink():
            if target.resolve() != source:
                log.warning(
                    "replacing the link %s -> %s; relink it to use that profile", target, os.readlink(target)
                )
            target.unlink()
        target.symlink_to(source, target_is_directory=True)
        log.info("linked %s -> %s", target, source)
    return [target for _, target in pairs]
