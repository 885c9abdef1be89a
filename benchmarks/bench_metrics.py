"""Time apse.metrics on an FI-sized retrieval problem (a script, not a test).

FI's protocol: 15 % of 23,164 images (about 3,500) query the 80 % training split (about 18,600).
Embeddings are random 512-d unit vectors and labels are random emotions, so the metric values
themselves are chance level; only the times and memory matter here.

    python3 benchmarks/bench_metrics.py [--queries 3500] [--gallery 18600] [--chunk-size N]

Peak memory is the process's peak resident set size (``ru_maxrss``), read before and after each step:
torch's CPU allocations are invisible to tracemalloc.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from apse.metrics import METRIC_NAMES, pairwise_distances, retrieval_metrics


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=3500)
    parser.add_argument("--gallery", type=int, default=18600)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(args.seed)
    q = torch.nn.functional.normalize(torch.randn(args.queries, args.dim, generator=gen), dim=1)
    g = torch.nn.functional.normalize(torch.randn(args.gallery, args.dim, generator=gen), dim=1)
    q_labels = torch.randint(0, 8, (args.queries,), generator=gen)
    g_labels = torch.randint(0, 8, (args.gallery,), generator=gen)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.queries} queries x {args.gallery} gallery, {args.dim}-d float32")

    base = peak_rss_mb()
    t0 = time.perf_counter()
    d = pairwise_distances(q, g)
    t_dist = time.perf_counter() - t0
    after_dist = peak_rss_mb()
    print(f"pairwise_distances: {t_dist:6.2f} s   distance matrix {d.numel() * d.element_size() / 2**20:.0f} MB, "
          f"peak RSS +{after_dist - base:.0f} MB")

    t0 = time.perf_counter()
    metrics = retrieval_metrics(d, q_labels, g_labels, chunk_size=args.chunk_size)
    t_metrics = time.perf_counter() - t0
    after_metrics = peak_rss_mb()
    print(f"retrieval_metrics:  {t_metrics:6.2f} s   peak RSS +{after_metrics - after_dist:.0f} MB over the "
          f"distances (chunk temporaries), process peak {after_metrics:.0f} MB")
    print("values (chance level, ~1/8 for emotion metrics):")
    print("  " + "  ".join(f"{name}={metrics[name]:.4f}" for name in METRIC_NAMES))


if __name__ == "__main__":
    main()
