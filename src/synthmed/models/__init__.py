"""Model factories (Chapter 5): the thesis's basic CNN, ResNet-18 and ViT."""

from synthmed.models.base import ModelFactory

__all__ = ["ModelFactory"]
