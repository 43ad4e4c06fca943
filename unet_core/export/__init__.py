"""bioimage.io model packages (spec 0.5): `export_package` writes one from trained checkpoints,
`load_package` reads the U-Net(s) back for ``unet-core predict``."""

from ._network import CellProbability, halo, min_input
from ._package import DEFAULT_LICENSE, DEFAULT_NAME, FORMAT, VERSION, export_package
from ._read import OTHER_PACKAGES, load_package, package_pixel_size

__all__ = [
    "DEFAULT_LICENSE",
    "DEFAULT_NAME",
    "FORMAT",
    "OTHER_PACKAGES",
    "VERSION",
    "CellProbability",
    "export_package",
    "halo",
    "load_package",
    "min_input",
    "package_pixel_size",
]
