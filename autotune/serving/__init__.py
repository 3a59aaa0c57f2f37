"""The serving suites: causal conv1d calls as inference engines make them (`problem/serving.py`)."""
