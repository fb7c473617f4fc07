"""Augmentation policies (Chapter 6): none, basic, AutoAugment & co., and synthetic."""

from synthmed.policies.base import AugmentationPolicy, PolicyContext

__all__ = ["AugmentationPolicy", "PolicyContext"]
