"""Datasets for rcnas: fixed seeded train/val/test splits, augmentation and batching.

The search only sees `val`; `test` is for the final evaluation (see `rcnas.data.base`).
"""
from __future__ import annotations

from rcnas.data.augment import AUGMENTATIONS, augment
from rcnas.data.base import DATASETS, DatasetInfo, DatasetSpec, Split, Splits
from rcnas.data.batches import iterate_batches
from rcnas.data.catalog import dataset_info, dataset_shape, load_dataset

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DatasetInfo",
    "DatasetSpec",
    "Split",
    "Splits",
    "augment",
    "dataset_info",
    "dataset_shape",
    "iterate_batches",
    "load_dataset",
]
