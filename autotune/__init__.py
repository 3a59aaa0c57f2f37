"""Data installed with tritonconv as `tritonconv.autotune`: shape suites (`*.csv`) and shipped tuned tables."""
