"""Importance methods. Importing this package registers every method (see `base.registered_methods`)."""

from audit.methods import permutation, weight_sum
from audit.methods.base import MethodContext, MethodNotApplicable, MethodSpec, registered_methods

__all__ = [
    "MethodContext",
    "MethodNotApplicable",
    "MethodSpec",
    "permutation",
    "registered_methods",
    "weight_sum",
]
