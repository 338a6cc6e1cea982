"""Maggy's import path ``maggy.ablation.ablationstudy``: the ablation study."""

from .study import AblationStudy

__all__ = ["AblationStudy"]
