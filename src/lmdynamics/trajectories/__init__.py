"""Per-token training trajectories (Xia et al. 2023; docs/science.md section 4): record, store, classify, compare.

- ``record``: the pure per-(context, token) loss of a model on fixed evaluation blocks;
- ``storage``: the compact columnar store (float16, one checkpoint appended at a time, resumable);
- ``tokens``: evaluation blocks from a text and the token metadata (class, corpus frequency);
- ``classify``: trend classes and double descent per start fraction, shares and breakdowns;
- ``compare``: group perplexity across sizes at equal step/tokens/FLOPs/validation perplexity, the overlap;
- ``contrastive``: decoding from max(w_s p_small + w_l p_large, 0) with a key/value cache;
- ``offline``: recording over run directories and hub revisions.
"""
