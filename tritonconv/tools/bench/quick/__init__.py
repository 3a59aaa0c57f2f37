"""`make gpu-quick`: the speed question answered by one command that fits a short GPU window.

A lent GPU gives 15 minutes, one command at most 10. In that time this run checks every kernel
route on the real GPU, tunes ResNet-50's passes over a space the static cost model pruned to ten
candidates per layer and pass, and benchmarks them against cuDNN, eager and in CUDA-graph replay,
then goes on to more suites while time is left; each stage's files are complete before the next
begins, and a second run resumes where the first stopped (`plan`). `python -m tritonconv.tools.bench.quick
--dry-run` prints the plan with its candidates, kernels and estimated device time.
"""
