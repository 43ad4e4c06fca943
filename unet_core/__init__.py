"""U-Net segmentation of electron-microscopy volumes (Ronneberger, Fischer, Brox 2015)."""

__version__ = "0.1.0"
