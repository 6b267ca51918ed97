"""Placeholder: filled in by the proxy implementation."""
