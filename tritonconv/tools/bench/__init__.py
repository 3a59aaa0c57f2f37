"""Benchmarks: time tritonconv against torch/cuDNN on real network shapes (GPU only). They write
pandas tables and matplotlib plots: the `reports` extra."""

from ..extras import require_reports

require_reports("tritonconv's benchmarks and reports")
