"""Latency: timing engines, device identity, versioned per-block tables, the predictor and the profiler.

Units are in every name: `*_ms` is milliseconds, `ms_per_batch` / `ms_per_image` say which.
"""
