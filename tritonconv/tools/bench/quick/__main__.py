"""python -m tritonconv.tools.bench.quick [--report] [--dry-run] [--budget SECONDS] [--device SLUG]

On a GPU: the quick run into reports/<device>/ and autotune/<device>.json (`make gpu-quick`); with
--report, the same run followed by the report's command stages and a longer default budget (`make
gpu-report`: run it again until it says no stages are left). With --dry-run (no GPU needed): the
plan, its kernels and its estimated device time.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ....problem.runtime import rerun_compiled
from . import report

ROOT = Path(__file__).resolve().parents[4]
BUDGET_S = 510  # from main(): imports before it and a stage item in flight at the deadline stay under 540 s
DRY_RUN_DEVICE = "nvidia-h200-sm90"  # the GPU a lent machine has


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its estimate; run nothing")
    parser.add_argument("--report", action="store_true", help="the full report: more stages after the quick run's")
    parser.add_argument("--budget", type=float, help=f"seconds this run may take (default {BUDGET_S}; --report: "
                        f"{report.REPORT_BUDGET_S})")  # fmt: skip
    parser.add_argument("--device", help=f"the device slug (default: this GPU's; {DRY_RUN_DEVICE} in a dry run)")
    args = parser.parse_args()
    if args.dry_run:
        rerun_compiled(
            "tritonconv.tools.bench.quick"
        )  # launchers plan for Hopper as on the GPU: captured, not compiled
    import torch

    from ....ops import static_compile
    from ....problem.suites import suites_folder
    from ....tuning.fingerprint import device_slug
    from . import context, plan

    gpu = torch.cuda.is_available() and not args.dry_run
    if not gpu and not args.dry_run:
        print("the quick run needs an NVIDIA GPU; --dry-run (make gpu-quick DRY_RUN=1) prints its plan")
        return 2
    device = args.device or (device_slug() if gpu else DRY_RUN_DEVICE)
    os.environ["TRITONCONV_CACHE_DIR"] = str(suites_folder())  # tuning fills the shipped table
    reports = ROOT / "reports" / device
    reports.mkdir(parents=True, exist_ok=True)
    timers = context.gpu_timers() if gpu else context.rehearsal_timers()
    export = Path(os.environ["OUT"]) if os.environ.get("OUT") else None  # the lent GPU's folder that comes back
    budget = args.budget or (report.REPORT_BUDGET_S if args.report else BUDGET_S)
    run = plan.quick_run(device, reports, suites_folder() / f"{device}.json", timers, budget, gpu,
                         model=plan.torchvision_resnet50(), export=export, report=args.report)  # fmt: skip
    stages = plan.stages(run)
    if args.dry_run:
        with static_compile.compiling_for("sm90"):
            return plan.dry_run(run, stages)
    torch.backends.cudnn.benchmark = True
    return plan.execute(run, stages, torch.cuda.get_device_capability())


if __name__ == "__main__":
    sys.exit(main())
