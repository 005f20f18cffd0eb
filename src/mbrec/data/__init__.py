"""Datasets: the immutable Dataset, readers for the MMRec and LATTICE layouts, the synthetic generator."""

from mbrec.data.dataset import Dataset
from mbrec.data.loading import load_dataset

__all__ = ["Dataset", "load_dataset"]
