"""alexspec: a declarative layer-spec compiler for AlexNet-style networks.

The compiler (spec loading, validation, inference, reporting) is pure Python and imports
neither torch nor triton; the runtime parts import them only when used.
"""
from __future__ import annotations

__version__ = "0.1.0"

from alexspec.errors import Problem, SpecError

from alexspec.fold import fold_batchnorm  # noqa: E402  (imports torch only when called)

__all__ = ["Problem", "SpecError", "__version__", "analyse", "build", "compile", "fold_batchnorm"]


def analyse(source):
    """Load, validate and infer a spec (a path or a Document): returns a NetworkInfo.

    Raises SpecError listing every problem when the spec is not valid.
    """
    from alexspec.spec import analyse as analyse_spec

    return analyse_spec(source)


def build(spec, backend: str = "auto", devices=None, fuse: bool = True, fuse_lrn_pool: bool = False,
          fuse_conv_lrn: bool = False):
    """Build a spec (path, bundled-spec file, dict or Document) into a Build: .module (the
    nn.Module), .info (inferred shapes and counts), .generated (the source), .backend.
    fuse=False: every layer runs on its own (default: the fusions of alexspec.fusion);
    fuse_lrn_pool=True: each LRN + max pool as one kernel too; fuse_conv_lrn=True: each conv +
    ReLU + LRN that fits one kernel as one."""
    from alexspec.builder import build as build_spec

    return build_spec(spec, backend, devices, fuse, fuse_lrn_pool, fuse_conv_lrn)


def compile(spec, backend: str = "auto", devices=None, fuse: bool = True,  # noqa: A001 (the natural name)
            fuse_lrn_pool: bool = False, fuse_conv_lrn: bool = False):
    """The nn.Module of a spec, for notebooks and the trainer (nothing is written to disk).

    backend: "auto" (triton on CUDA, else torch), "triton" or "torch"; devices: one per tower
    (tower parallel) or one (towers collapse into groups); default: the spec's placement.
    fuse / fuse_lrn_pool / fuse_conv_lrn: see alexspec.fusion.
    """
    return build(spec, backend, devices, fuse, fuse_lrn_pool, fuse_conv_lrn).module
