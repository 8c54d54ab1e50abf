"""The paper's pipeline on the planted-superposition network, step by step.

Run: ``python examples/tutorial.py [--out DIR]``. docs/tutorial.md shows this file in sections;
tests/test_examples.py runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import polyprune as pp
from polyprune import zoo


def main(out: Path) -> dict[str, object]:
    # --8<-- [start:model]
    model, truth = zoo.planted_network()  # features.6[0] fires for rings and for hstripes
    images, labels = zoo.concept_images(1500, size=zoo.PLANTED_SIZE, seed=1)
    unit = pp.Unit("features.6", 0)
    # --8<-- [end:model]

    # --8<-- [start:crop]
    rf = pp.ReceptiveField.of(model, unit.layer, images.shape[2:])
    print(rf.size, rf.stride, rf.output_size, rf.center)  # (18, 18) (4, 4) (8, 8) (3, 3)
    crop = rf.crop(images[:4])  # the center unit's field, aligned to the stride lattice
    with pp.ActivationRecorder(model, unit.layer, "center") as full:
        full.run(images[:4])
    with pp.ActivationRecorder(model, unit.layer, "center", position=crop.unit) as cropped:
        cropped.run(crop.images)
    assert torch.allclose(full.activations[unit.layer], cropped.activations[unit.layer])
    # --8<-- [end:crop]

    # --8<-- [start:top]
    top = pp.top_activating(model, unit, images, k=300, keep_inputs=True, progress=False)
    clusters = pp.cluster(top.codes)  # the center activations of every channel of the layer
    print(clusters.n_clusters, clusters.sizes, clusters.is_polysemantic)
    # --8<-- [end:top]

    # --8<-- [start:fit]
    crops, seen_as = top.inputs, top.input_unit  # crops and the unit's position in them
    assert crops is not None and seen_as is not None
    fit, held = pp.evaluation.held_out_split(clusters.labels, 0.2)
    clean = fit[clusters.labels[fit] >= 0]  # noise is neither member nor non-member
    members = torch.from_numpy(clusters.labels[clean] == 0)
    snip = pp.fit_subnetwork(model, seen_as, crops[clean], members, pp.SNIP(progress=False),
                             keep=0.05)  # fmt: skip
    cs = pp.fit_subnetwork(model, seen_as, crops[clean], members, "cs", progress=False)
    print(f"SNIP keeps {snip.kept_fraction:.1%}, CS keeps {cs.kept_fraction:.1%}")
    # --8<-- [end:fit]

    # --8<-- [start:evaluate]
    labels_t = torch.from_numpy(clusters.labels)
    report = pp.evaluate(model, seen_as, crops[fit], labels_t[fit], {0: cs.masks},
                         held_out=(crops[held], labels_t[held]))  # fmt: skip
    c0 = report.clusters[0]
    print(f"AUROC {c0.before.auroc:.2f} → {c0.after.auroc:.2f} (held out: "
          f"{c0.after_held_out.auroc if c0.after_held_out else float('nan'):.2f})")  # fmt: skip
    # which planted circuit is cluster 0? the concept most of its crops show
    concept = zoo.CONCEPTS[int(labels[top.indices][clusters.members(0)].mode().values)]
    print(
        f"cluster 0 = {concept}; IoU with its planted circuit: {cs.masks.iou(truth[concept]):.2f}"
    )
    # --8<-- [end:evaluate]

    # --8<-- [start:study]
    result = pp.study(model, unit, images, k=300, methods=("cs", "snip", "force"),
                      progress=False)  # fmt: skip
    print(result.summary())
    result.save(out)  # report.html, report.md, results.json and the figures
    # --8<-- [end:study]
    return {"rf": rf, "clusters": clusters, "cs": cs, "snip": snip, "report": report,
            "result": result, "concept": concept}  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("polyprune-tutorial"))
    main(parser.parse_args().out)
