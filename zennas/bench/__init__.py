"""Validate zero-cost proxies against a ground truth: cached scoring, oriented rank correlations, rank ensembles."""

from zennas.bench.cache import DEFAULT_CACHE_DIR, ScoreCache
from zennas.bench.rank import (
    DEGENERATE_MODES,
    Correlation,
    RankEnsemble,
    correlate,
    orient,
    rank_aggregate,
    select_members,
    split_half,
)
from zennas.bench.runner import (
    DATASETS,
    HEAD_INDEPENDENT,
    BenchReport,
    GroundTruth,
    bench_proxies,
    dataset_settings,
    load_data,
    parse_options,
    read_ground_truth,
)

__all__ = [
    "DATASETS",
    "DEFAULT_CACHE_DIR",
    "DEGENERATE_MODES",
    "HEAD_INDEPENDENT",
    "BenchReport",
    "Correlation",
    "GroundTruth",
    "RankEnsemble",
    "ScoreCache",
    "bench_proxies",
    "correlate",
    "dataset_settings",
    "load_data",
    "orient",
    "parse_options",
    "rank_aggregate",
    "read_ground_truth",
    "select_members",
    "split_half",
]
