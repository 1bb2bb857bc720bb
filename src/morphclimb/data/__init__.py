"""Datasets: loaders (bundled mini CIFAR-10, official CIFAR files, image folders, .npz) and splits.

Augmentation and normalisation live with the trainer; a Split only carries the mean/std.
"""

from .arrays import load_npz
from .cifar import CIFAR_SOURCES, CifarSource, load_cifar
from .core import Dataset, ImageData, Split, channel_stats
from .folder import load_folder
from .load import KNOWN_SOURCES, dataset_info, default_root, load_dataset, load_split

__all__ = [
    "CIFAR_SOURCES", "CifarSource", "Dataset", "ImageData", "KNOWN_SOURCES", "Split",
    "channel_stats", "dataset_info", "default_root", "load_cifar", "load_dataset",
    "load_folder", "load_npz", "load_split",
]
