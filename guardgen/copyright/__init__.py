"""Near access-freeness (NAF) copyright protection (Vyas, Kakade & Barak, ICML 2023).

- ``bounds``: divergences and the NAF bounds as pure functions (p(E) <= 2^k q(E), the KL form, k from TV / Hellinger).
- ``discrete``: exact CP-Δ (max-KL and KL combiners) and CP-k on discrete output spaces, plus a rejection sampler.
- ``sharding``: near-duplicate grouping, sharding with protected works deduplicated, the disjointness check.
- ``works``: protected works (load, plant copies), reproduction rate by nearest-neighbour pixel distance.
- ``store``: shards folders on disk; one model per shard through the zoo's training loop.
- ``diffusion``: CP-k for diffusion pipelines with a per-step Gaussian path log-ratio (a likelihood proxy).

Foundation layer: imports no method package.
"""

from guardgen.copyright.bounds import (check_k, event_bound_kl, event_bound_max_kl, hellinger2, k_effective, k_from_hellinger,
                                       k_from_tv, kl, max_kl, tv)
from guardgen.copyright.diffusion import CPk, CPkSamples, audit_naf, calibrate_k, image_shape, sample_with_log_ratios
from guardgen.copyright.discrete import CPDelta, cp_delta, cp_k, log_ratios, sample_cp_k
from guardgen.copyright.sharding import (ShardPlan, check_shards, near_duplicate_groups, nn_distance, pixel_distance,
                                         plan_given_shards, shard_dataset)
from guardgen.copyright.store import Shards, load_shards, save_shards, shard_config, train_shard_models
from guardgen.copyright.works import check_labels, load_protected, reproduction, with_copies

__all__ = [
    "tv", "hellinger2", "kl", "max_kl", "event_bound_max_kl", "event_bound_kl", "k_from_tv", "k_from_hellinger",
    "k_effective", "check_k",
    "CPDelta", "cp_delta", "cp_k", "log_ratios", "sample_cp_k",
    "CPk", "CPkSamples", "audit_naf", "calibrate_k", "image_shape", "sample_with_log_ratios",
    "ShardPlan", "pixel_distance", "nn_distance", "near_duplicate_groups", "shard_dataset", "check_shards",
    "plan_given_shards",
    "Shards", "save_shards", "load_shards", "shard_config", "train_shard_models",
    "load_protected", "check_labels", "with_copies", "reproduction",
]
