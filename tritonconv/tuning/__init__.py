"""The autotuner's parts: config spaces as data, the noise-aware choice, and the on-disk cache."""
