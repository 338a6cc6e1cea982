"""Maggy's import path ``maggy.optimizer.abstractoptimizer``: the optimizers' base."""

from ..optimizers.base import AbstractOptimizer

__all__ = ["AbstractOptimizer"]
