"""Benchmarks: time tritonconv against torch/cuDNN on real network shapes (GPU only)."""
