"""The serving benchmark (`tools/bench/serving.py`) on tiny cases through the interpreter: every
provider is checked against torch's equivalent (outputs and the state cache) before it is timed."""

import math

import torch

from tritonconv.problem.serving import load_serving_suite, serving_tensors
from tritonconv.tools.bench import serving


def test_each_case_checks_then_times_tritonconv_and_torch(tmp_path):
    suite = tmp_path / "tiny.csv"
    rows = ["layer,count,kind,batch,channels,width,tokens", "decode b3,1,decode,3,12,4,1",
            "decode b2 T4,1,decode,2,12,3,4", "prefill 3,1,prefill,3,12,4,70"]  # fmt: skip
    suite.write_text("\n".join(rows) + "\n")
    cases = load_serving_suite(str(suite))
    timed = []

    def timer(call):
        timed.append(call)
        return 2.0 if len(timed) % 2 else 1.0

    table = serving.bench_serving(cases, "cpu", torch.bfloat16, timer, lambda call: math.nan, "cpu (test)")
    assert set(table["provider"]) == {"tritonconv", "torch"}  # the causal-conv1d package is not installed here
    assert table["correct"].all() and (table["max_rel_err"] <= serving.TOLERANCE[torch.bfloat16]).all()
    assert len(timed) == len(table) == 2 * len(cases)
    assert (table.loc[table["provider"] == "torch", "over_tritonconv"] == 0.5).all()


def test_the_torch_equivalent_updates_the_cache_as_tritonconv_does():
    case = load_serving_suite("ssm")[0]
    case = type(case)(case.name, 1, "prefill", 2, 8, 4, 9)
    tensors = serving_tensors(case, "cpu", torch.float32)
    before = tensors.states.clone()
    serving.torch_call(case, tensors)()
    changed = (tensors.states != before).flatten(1).any(1)
    assert changed.tolist() == [False, True, False, True], "the batch's lines (every other one) and only they"


def test_the_host_benchmark_runs_without_a_gpu_as_the_docs_say(tmp_path):
    """`python -m tritonconv.tools.bench.host` restarts itself under the interpreter without a GPU
    (it exited with "tritonconv runs on CUDA tensors" unless TRITON_INTERPRET was set by hand)."""
    import os
    import subprocess
    import sys

    suite = tmp_path / "one.csv"
    suite.write_text("layer,count,n,c,h,w,k,r,s,stride_h,stride_w,pad_h,pad_w,dil_h,dil_w,groups\n"
                     "3x3,1,1,4,5,5,4,3,3,1,1,1,1,1,1,1\n")  # fmt: skip
    environment = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    out = tmp_path / "host.csv"
    result = subprocess.run([sys.executable, "-m", "tritonconv.tools.bench.host", "--suite", str(suite), "--calls",
                             "2", "--repeats", "1", "--out", str(out)], capture_output=True, text=True,
                            env=environment, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.exists() and "fwd" in out.read_text()
