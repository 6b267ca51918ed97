"""zennas: zero-shot, hardware-aware neural architecture search."""

from zennas.errors import ZennasError

__version__ = "0.1.0"
__all__ = ["ZennasError", "__version__"]
