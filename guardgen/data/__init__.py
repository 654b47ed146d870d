"""Data: real datasets shipped in packages, image folders, generated-image sets, transforms."""

from guardgen.data.folders import ImageFolderDataset, LoadReport, load_image_folder
from guardgen.data.generated import load_image_set, save_grid, write_image_set
from guardgen.data.shipped import ImageSet, load_digits, load_lfw, load_mnist, load_photos, resize, to_channels

__all__ = [
    "ImageSet", "load_mnist", "load_digits", "load_lfw", "load_photos", "resize", "to_channels",
    "ImageFolderDataset", "LoadReport", "load_image_folder",
    "load_image_set", "save_grid", "write_image_set",
]
