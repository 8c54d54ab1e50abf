"""Scan a layer for polysemantic units, then study the most polysemantic one — on one process
or on several with torchrun (the same script, the same results).

    python examples/scan_torchrun.py [OUT]
    torchrun --nproc-per-node 2 examples/scan_torchrun.py [OUT]

Under torchrun each rank reads half of the images and fits half of the subnetworks; every rank
gets the same results and only rank 0 writes the reports (``OUT/scan``, ``OUT/study``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import polyprune as pp
from polyprune import zoo


def main(out: Path) -> tuple[pp.results.Scan, pp.results.StudyResult]:
    model, _ = zoo.planted_network()  # a CNN with a planted polysemantic unit
    images, _ = zoo.concept_images(600, size=zoo.PLANTED_SIZE, seed=1)
    scan = pp.scan(model, "features.6", images, k=120, progress=False)  # one pass, all channels
    print(scan.summary())
    scan.save(out / "scan", images)  # rank 0 writes: table, scores, crop grids

    unit = scan.ranked()[0]  # the most polysemantic channel
    top = scan.top(unit, images)  # its top-k from the scan, crops read by index: no new pass
    result = pp.study(model, unit, images, top=top, methods=["actgrad", "snip"], progress=False)
    result.save(out / "study")
    return scan, result


if __name__ == "__main__":
    torch.set_num_threads(1)
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if launched:  # torchrun: one process per rank; gloo on the CPU (nccl for CUDA models)
        dist.init_process_group("gloo")
    try:
        scan, result = main(Path(sys.argv[1] if len(sys.argv) > 1 else "scan-example"))
        if not launched or dist.get_rank() == 0:
            print(result.summary())
    finally:
        if launched:  # every rank done with every exchange before any tears its group down
            dist.barrier()
            dist.destroy_process_group()
