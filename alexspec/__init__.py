"""alexspec: a declarative layer-spec compiler for AlexNet-style networks.

The compiler (spec loading, validation, inference, reporting) is pure Python and imports
neither torch nor triton; the runtime parts import them only when used.
"""
from __future__ import annotations

__version__ = "0.1.0"

from alexspec.errors import Problem, SpecError

__all__ = ["Problem", "SpecError", "__version__", "analyse"]


def analyse(source):
    """Load, validate and infer a spec (a path or a Document): returns a NetworkInfo.

    Raises SpecError listing every problem when the spec is not valid.
    """
    from alexspec.spec import analyse as analyse_spec

    return analyse_spec(source)
