"""The command line's choices that live with reporting tools (which need the `reports` extra):
kept here so `tritonconv --help` builds its parser without importing pandas."""

COMPARE_FORMATS = ("text", "md", "csv")  # `tritonconv compare --format`
BASELINES = ("torch", "inductor")  # `tritonconv bench --baseline`
GATE_SUITES = ("smoke", "resnet50", "video")  # `tritonconv check-kernels --suite` by default
