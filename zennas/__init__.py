"""zennas: zero-shot, hardware-aware neural architecture search.

`import zennas` stays light (no torch); `create_model` imports torch when first called.
"""

from zennas.arch import ArchSpec, list_dialects, parse
from zennas.errors import ZennasError
from zennas.models import list_models

__version__ = "0.1.0"


def create_model(arch, **kwargs):
    """Build a registered model by name, or any architecture string/file/ArchSpec (see zennas.api)."""
    from zennas.api import create_model as _create_model

    return _create_model(arch, **kwargs)


def info(arch, **kwargs):
    """Analytic description of an architecture (see zennas.api.info)."""
    from zennas.api import info as _info

    return _info(arch, **kwargs)


__all__ = ["ArchSpec", "ZennasError", "__version__", "create_model", "info", "list_dialects", "list_models", "parse"]
