"""Person re-identification: Market-1501 data, P x K batches, a BNNeck head, ID + triplet loss, CMC/mAP, re-ranking.

The modules: `market` reads and checks a Market-1501 folder (and holds the datasets and the P x K
sampler), `model` builds the BNNeck network and its losses, `metrics` ranks and scores (CMC, mAP,
chance level, k-reciprocal re-ranking), and `task` runs `zennas train reid` on the one training loop
(zennas.train.loop). Each module's docstring gives its rules; every public name is importable from here.
"""

from zennas.train.reid.market import (
    DISTRACTOR,
    JUNK,
    PATTERN_HINT,
    SPLITS,
    PKSampler,
    ReidData,
    ReidDataset,
    ReidImage,
    parse_market_name,
    read_market1501,
    reid_transforms,
)
from zennas.train.reid.metrics import (
    chance_metrics,
    distance_matrix,
    evaluate_ranking,
    evaluate_reid,
    extract_features,
    k_reciprocal_rerank,
)
from zennas.train.reid.model import BNNeck, batch_hard_triplet, build_reid_model, load_pretrained
from zennas.train.reid.task import METRICS, NECK_FEATURES, OPTIMIZERS, ReidConfig, ReidTask, train_reid

__all__ = [
    "DISTRACTOR", "JUNK", "METRICS", "NECK_FEATURES", "OPTIMIZERS", "PATTERN_HINT", "SPLITS", "BNNeck", "PKSampler",
    "ReidConfig", "ReidData", "ReidDataset", "ReidImage", "ReidTask", "batch_hard_triplet", "build_reid_model",
    "chance_metrics", "distance_matrix", "evaluate_ranking", "evaluate_reid", "extract_features",
    "k_reciprocal_rerank", "load_pretrained", "parse_market_name", "read_market1501", "reid_transforms",
    "train_reid",
]  # fmt: skip
