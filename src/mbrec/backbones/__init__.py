"""Backbones: one file per model, registered by name with ``@register("<name>")``.

Every module in this package is imported here, so a new backbone is one file plus one
``conf/backbone/<name>.yaml``; nothing else needs editing.
"""

import importlib
import pkgutil

from mbrec.backbones.base import BACKBONES, Backbone, build_backbone, register

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in {"base", "graph"}:
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["BACKBONES", "Backbone", "build_backbone", "register"]
