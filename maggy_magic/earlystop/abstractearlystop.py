"""Maggy's import path ``maggy.earlystop.abstractearlystop``: the early-stopping base."""

from .base import AbstractEarlyStop

__all__ = ["AbstractEarlyStop"]
