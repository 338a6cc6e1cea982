"""Maggy's import path for the optimizers (``from maggy.optimizer import RandomSearch``):
the same classes as :mod:`maggy_magic.optimizers`, under the name Maggy's code imports."""

from ..optimizers import AbstractOptimizer, Asha, GridSearch, RandomSearch, SingleRun

__all__ = ["AbstractOptimizer", "RandomSearch", "Asha", "SingleRun", "GridSearch"]
