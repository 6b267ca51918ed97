"""Torch modules: one parametrised module per block family, plus the shared network shell."""
