"""Datasets (Chapter 2): loading, decoding once into uint8 tensors, stratified sampling."""

from synthmed.data.base import Dataset, ImageSet, Splits

__all__ = ["Dataset", "ImageSet", "Splits"]
