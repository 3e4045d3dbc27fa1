"""Importance methods, one module per measure. Importing this package imports every module in it,
which registers each method (see `base.registered_methods`): a new method is just a new module."""

import importlib
import pkgutil

from audit.methods.base import (
    MethodContext,
    MethodNotApplicable,
    MethodSpec,
    option_schemas,
    registered_methods,
)

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    if _module.name not in ("base", "__main__"):  # __main__: `python -m audit.methods`
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MethodContext", "MethodNotApplicable", "MethodSpec", "option_schemas", "registered_methods"]
