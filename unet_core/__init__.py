"""U-Net segmentation of electron-microscopy volumes (Ronneberger, Fischer, Brox 2015)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["predict_dask"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the workflow imports this package to read its Snakefile, without torch.
    if name == "predict_dask":
        from .blockwise import predict_dask

        return predict_dask
    raise AttributeError(f"module 'unet_core' has no attribute {name!r}")
