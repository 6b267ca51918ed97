"""The classic zero-cost proxies: naswot, jacov, synflow, grad_norm, snip, zico and ntk.

Each lives in its own module; importing this one registers them all (REFERENCE 3.5-3.12).
"""

from __future__ import annotations

from zennas.proxies import naswot, ntk, saliency  # noqa: F401  (registration side effects)
