"""ReID evaluation: the Market-1501 protocol's CMC and mAP, their chance level, and k-reciprocal re-ranking.

Protocol: for each query, gallery images of the same person *and* the same camera are removed
from its ranking (they are too easy); the rest is ranked by distance (ties by gallery order). CMC
rank-k is the share of queries with a true match among the first k; AP is the mean of the
precision at each true match (the non-interpolated AP of the usual Python evaluators; the
Market-1501 MATLAB code averages adjacent precisions and gives slightly different values), mAP its
mean over queries. Every query needs a true match from another camera (else an error names it).

Units: rank-k and mAP are percentages (0-100) everywhere (metrics.json, metrics.jsonl, the
returned dicts), like top-1 in classification; `chance_metrics` gives the same figures for a
uniformly random ranking, to judge a result against.

Inference embeds with f_i (after the BNNeck) by default; `cosine` L2-normalises embeddings before
Euclidean distances. Re-ranking (Zhong et al., CVPR 2017), see `k_reciprocal_rerank`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from zennas.errors import ConfigError
from zennas.train.reid.market import JUNK
from zennas.train.reid.model import BNNeck


def distance_matrix(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Euclidean distances [M, N] (float64) between the rows of a [M, D] and b [N, D]."""
    a, b = a.double(), b.double()
    squared = a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2 * a @ b.T
    return squared.clamp_min(0).sqrt().cpu().numpy()


def _valid_and_good(q_pid: int, q_cam: int, g_pids: np.ndarray, g_cams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks over the gallery: ranked at all (not junk, not same person + same camera), and true matches."""
    same = g_pids == q_pid
    valid = (g_pids != JUNK) & ~(same & (g_cams == q_cam))
    return valid, same & valid


def _no_match(index: int, names: Sequence[str] | None, pid: int) -> ConfigError:
    which = names[index] if names is not None else f"query {index}"
    return ConfigError(f"{which}: person {pid} has no gallery image from another camera, so CMC/mAP are undefined")


def evaluate_ranking(
    dist: np.ndarray,
    q_pids: Sequence[int],
    q_cams: Sequence[int],
    g_pids: Sequence[int],
    g_cams: Sequence[int],
    *,
    max_rank: int = 50,
    query_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """CMC and mAP (percent) of a query x gallery distance matrix under the Market-1501 protocol.

    Returns rank1, rank5, rank10, map (percent), cmc (percent at ranks 1..max_rank) and queries.
    Gallery person -1 is junk (never ranked); same person + same camera is excluded per query.
    """
    dist = np.asarray(dist, dtype=np.float64)
    q_pids, q_cams = np.asarray(q_pids), np.asarray(q_cams)
    g_pids, g_cams = np.asarray(g_pids), np.asarray(g_cams)
    if dist.shape != (len(q_pids), len(g_pids)) or len(q_cams) != len(q_pids) or len(g_cams) != len(g_pids):
        raise ConfigError(f"distance matrix {dist.shape} does not fit {len(q_pids)} queries x {len(g_pids)} gallery")
    cmc = np.zeros(max_rank)
    aps = []
    for i in range(len(q_pids)):
        valid, good = _valid_and_good(q_pids[i], q_cams[i], g_pids, g_cams)
        order = np.argsort(dist[i], kind="stable")
        hits = good[order][valid[order]]  # [valid gallery], True at true matches, in rank order
        if not hits.any():
            raise _no_match(i, query_names, int(q_pids[i]))
        first = int(np.argmax(hits))
        if first < max_rank:
            cmc[first:] += 1
        positions = np.flatnonzero(hits) + 1  # 1-based ranks of the true matches
        aps.append(np.mean(np.arange(1, len(positions) + 1) / positions))
    cmc = 100 * cmc / len(q_pids)
    at = {k: float(cmc[min(k, max_rank) - 1]) for k in (1, 5, 10)}
    return {"rank1": at[1], "rank5": at[5], "rank10": at[10], "map": 100 * float(np.mean(aps)),
            "cmc": cmc.tolist(), "queries": len(q_pids)}  # fmt: skip


def chance_metrics(
    q_pids: Sequence[int], q_cams: Sequence[int], g_pids: Sequence[int], g_cams: Sequence[int]
) -> dict[str, float]:
    """Expected rank1/rank5/rank10/map (percent) of a uniformly random ranking, exactly.

    With n valid gallery images of which r match: P(a match in the first k) = 1 - C(n-r, k)/C(n, k),
    and E[AP] = (H_n + (r-1)/(n-1) * (n - H_n)) / n (H_n the n-th harmonic number).
    """
    g_pids, g_cams = np.asarray(g_pids), np.asarray(g_cams)
    sums = {"rank1": 0.0, "rank5": 0.0, "rank10": 0.0, "map": 0.0}
    for pid, cam in zip(q_pids, q_cams, strict=True):
        valid, good = _valid_and_good(pid, cam, g_pids, g_cams)
        n, r = int(valid.sum()), int(good.sum())
        for k in (1, 5, 10):
            miss = 1.0  # C(n - r, k) / C(n, k) as a running product
            for j in range(min(k, n)):
                miss *= max(0, n - r - j) / (n - j)
            sums[f"rank{k}"] += 1 - miss
        harmonic = float(np.sum(1.0 / np.arange(1, n + 1)))
        sums["map"] += (harmonic + (r - 1) / max(1, n - 1) * (n - harmonic)) / n
    return {key: 100 * value / len(q_pids) for key, value in sums.items()}


def k_reciprocal_rerank(
    q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> np.ndarray:
    """Zhong et al.'s k-reciprocal re-ranking: the final query x gallery distance [Q, G].

    Over all Q + G images, with d the input distance squared and divided by its row maximum (the
    paper's d is a Mahalanobis, i.e. squared, distance; the scaling follows the authors' code):
    - N(p, k): p and its k nearest neighbours (p first; ties by index).
    - R(p, k) = {g in N(p, k) : p in N(g, k)}, the k-reciprocal neighbours (Eq. 3).
    - R*(p, k1) = R(p, k1) plus R(q, round(k1/2)) for every q in R(p, k1) with
      |R(p, k1) & R(q, k1/2)| >= 2/3 |R(q, k1/2)| (Eq. 4; the authors' code uses a strict >).
    - V_p,g = exp(-d(p, g)) on R*(p, k1), 0 elsewhere (Eq. 7), scaled to sum 1 per row (as the
      authors' code does; then Eq. 10's denominator is 2 - the numerator).
    - Local query expansion: V_p = mean of V_g over g in N(p, k2 - 1), i.e. the k2 nearest (Eq. 11).
    - Jaccard distance d_J(p, g) = 1 - sum_j min(V_p,j, V_g,j) / sum_j max(V_p,j, V_g,j) (Eq. 10).
    - Final distance (1 - lambda) d_J + lambda d (Eq. 12).
    Memory: the (Q + G)^2 distance matrix (float32); the encodings V are sparse.
    """
    from scipy import sparse

    q_g, q_q, g_g = (np.asarray(m, dtype=np.float32) for m in (q_g, q_q, g_g))
    nq, ng = q_g.shape
    if q_q.shape != (nq, nq) or g_g.shape != (ng, ng):
        raise ConfigError(f"re-ranking needs q_g [Q, G], q_q [Q, Q], g_g [G, G]; got {q_g.shape}, {q_q.shape}, "
                          f"{g_g.shape}")  # fmt: skip
    if k1 < 1 or k2 < 1 or not 0 <= lambda_value <= 1:
        raise ConfigError(f"re-ranking needs k1 >= 1, k2 >= 1 and 0 <= lambda <= 1, got {k1}, {k2}, {lambda_value}")
    n = nq + ng
    dist = np.block([[q_q, q_g], [q_g.T, g_g]])  # [N, N]
    np.square(dist, out=dist)  # in place: at Market-1501's size this matrix alone is 1.5 GB
    dist /= np.maximum(dist.max(axis=1, keepdims=True), np.finfo(np.float32).tiny)
    half = round(k1 / 2)
    width = min(n, max(k1, k2) + 1)
    ranked = np.empty((n, width), dtype=np.int64)
    for start in range(0, n, 1024):  # chunks keep the argsort's index matrix small
        ranked[start : start + 1024] = np.argsort(dist[start : start + 1024], axis=1, kind="stable")[:, :width]

    def neighbours(k: int) -> sparse.csr_matrix:  # N(p, k) as a 0/1 matrix
        cols = ranked[:, : min(n, k + 1)]
        rows = np.repeat(np.arange(n), cols.shape[1])
        return sparse.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols.ravel())), shape=(n, n))

    def reciprocal(k: int) -> sparse.csr_matrix:  # R(p, k): g in N(p, k) and p in N(g, k)
        m = neighbours(k)
        return m.multiply(m.T).tocsr()

    r1, rh = reciprocal(k1), reciprocal(half)
    overlap = (r1 @ rh.T).tocsr()  # [p, q] = |R(p, k1) & R(q, k1/2)|
    candidate = r1.multiply(overlap).tocoo()  # q in R(p, k1), valued by the overlap
    sizes = np.asarray(rh.sum(axis=1)).ravel()
    keep = candidate.data >= 2 / 3 * sizes[candidate.col]
    expand = sparse.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32),
                                (candidate.row[keep], candidate.col[keep])), shape=(n, n))  # fmt: skip
    r_star = ((r1 + expand @ rh) > 0).tocoo()
    weights = np.exp(-dist[r_star.row, r_star.col])
    v = sparse.csr_matrix((weights, (r_star.row, r_star.col)), shape=(n, n))
    sums = np.asarray(v.sum(axis=1)).ravel()  # > 0 unless p is not among its own k1 + 1 nearest (duplicates)
    v = sparse.diags(1 / np.where(sums > 0, sums, 1)) @ v
    if k2 > 1:
        cols = ranked[:, : min(n, k2)]
        rows = np.repeat(np.arange(n), cols.shape[1])
        mean = sparse.csr_matrix((np.full(rows.size, 1 / cols.shape[1]), (rows, cols.ravel())), shape=(n, n))
        v = (mean @ v).tocsr()
    v = v.tocsr()
    gallery = v[nq:].tocsc()  # [G, N]
    row_sums = np.asarray(v.sum(axis=1)).ravel()
    jaccard = np.ones((nq, ng), dtype=np.float32)
    for i in range(nq):
        start, stop = v.indptr[i], v.indptr[i + 1]
        cols, vals = v.indices[start:stop], v.data[start:stop]
        sub = gallery[:, cols]  # [G, |V_i|], CSC
        mins = np.minimum(sub.data, np.repeat(vals, np.diff(sub.indptr)))
        intersection = np.bincount(sub.indices, weights=mins, minlength=ng)  # [G]
        union = row_sums[i] + row_sums[nq:] - intersection
        jaccard[i] = 1 - np.divide(intersection, union, out=np.zeros(ng), where=union > 0)
    return (1 - lambda_value) * jaccard + lambda_value * dist[:nq, nq:]


@torch.no_grad()
def extract_features(
    model: BNNeck,
    loader: DataLoader,
    device: torch.device,
    neck: str = "after",
    autocast: Callable = contextlib.nullcontext,
    channels_last: bool = False,
) -> torch.Tensor:
    """Embeddings [N, C] (float32, CPU) of every image in `loader`, in its order."""
    model.eval()
    out = []
    for x, _ in loader:
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            out.append(model.embed(x, neck).float().cpu())
    return torch.cat(out)


def evaluate_reid(
    model: BNNeck,
    query: DataLoader,
    gallery: DataLoader,
    device: torch.device,
    *,
    neck: str = "after",
    metric: str = "cosine",
    rerank: tuple[int, int, float] | None = None,
    autocast: Callable = contextlib.nullcontext,
    channels_last: bool = False,
) -> dict[str, Any]:
    """rank1/5/10 and map (percent) of `model` on query vs gallery, plus rerank_* with (k1, k2, lambda)."""
    qf = extract_features(model, query, device, neck, autocast, channels_last)  # [Q, C]
    gf = extract_features(model, gallery, device, neck, autocast, channels_last)  # [G, C]
    if metric == "cosine":
        qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
    q_ims, g_ims = query.dataset.images, gallery.dataset.images
    ids = ([im.pid for im in q_ims], [im.camera for im in q_ims], [im.pid for im in g_ims], [im.camera for im in g_ims])
    names = [f"query/{Path(im.path).name}" for im in q_ims]
    q_g = distance_matrix(qf, gf)
    result = evaluate_ranking(q_g, *ids, query_names=names)
    if rerank is not None:
        k1, k2, lam = rerank
        final = k_reciprocal_rerank(q_g, distance_matrix(qf, qf), distance_matrix(gf, gf), k1=k1, k2=k2,
                                    lambda_value=lam)  # fmt: skip
        again = evaluate_ranking(final, *ids, query_names=names)
        result.update({f"rerank_{key}": again[key] for key in ("rank1", "rank5", "rank10", "map")})
    return result


__all__ = [
    "chance_metrics", "distance_matrix", "evaluate_ranking", "evaluate_reid", "extract_features", "k_reciprocal_rerank",
]  # fmt: skip
