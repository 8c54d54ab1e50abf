"""What one meaning looks like in the codes: the tail weight of planted monosemantic detectors.

Issue 22 asks that the verdict's null respect what "one meaning" looks like, measured on the
planted networks' monosemantic channels rather than assumed. This part measures it on the
tuning seeds (0–4): for every monosemantic channel (distractor and read-out detectors, not
dead or constant) the codes of the strongest half of its top-k (what the test sees), and the
same measures on the synthetic null clouds of the same size (one Gaussian, one multivariate t
with 5 degrees of freedom, the j-th variance 1/j) and on the planted polysemantic units.

- **PC-1 excess kurtosis**: of the scores on the leading principal axis (0 for a Gaussian,
  6 for t5 in the limit; two separated groups give negative values).
- **Mardia's kurtosis / C(C + 2)**: the mean fourth power of the Mahalanobis radii (sample
  covariance) over a Gaussian's expectation (1; t5: 3 in the limit).
- **Radius spread**: sd / mean of the Mahalanobis radii.
- **1-D index of PC-1**: ``1 − mean|s|² / mean(s²)`` of the centred PC-1 scores ``s``, the
  2-means index of a split at the mean along PC-1 (Gaussian 0.36, t5 0.46 in the limit).
- **PC-1 skewness (absolute)**: the absolute third standardized moment of the PC-1 scores (0 for a
  Gaussian or a t cloud in the limit; the sign of PC-1 is arbitrary). Not a tail measure: the
  skewed null cloud of the goals table is matched to it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

import polyprune as pp
from polyprune import zoo

from ..claims.faithful.config import SETTINGS, Setting

#: The measures, in table order: (key, column heading).
MEASURES = (
    ("kurtosis", "PC-1 excess kurtosis"),
    ("mardia", "Mardia's kurtosis / C(C+2)"),
    ("spread", "radius spread (sd / mean)"),
    ("index", "1-D index of PC-1"),
    ("skewness", "PC-1 skewness (absolute)"),
)
#: The measures of tail weight (the skewness is not one: t clouds are symmetric).
TAIL_MEASURES = MEASURES[:4]
#: Reference clouds per kind.
CLOUDS = 200
#: Channels of ``features.6`` of a planted network, the layer measured.
CHANNELS = 5

Cloud = Callable[[np.random.Generator, int, int, str], NDArray[np.float64]]
Summary = dict[str, tuple[float, float, float]]


def measures(x: NDArray[np.float64]) -> dict[str, float]:
    """The four tail measures of codes ``x`` (N, C), in their nonzero principal subspace."""
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    keep = s > s[0] * 1e-9
    n, r = x.shape[0], int(keep.sum())
    radius2 = (u[:, keep] ** 2).sum(1) * (n - 1)  # squared Mahalanobis radii
    pc1 = u[:, 0] * s[0]
    return {
        "kurtosis": float(((pc1 - pc1.mean()) ** 4).mean() / pc1.var() ** 2 - 3),  # Fisher's
        "mardia": float((radius2**2).mean() / (r * (r + 2))),
        "spread": float(np.sqrt(radius2).std() / np.sqrt(radius2).mean()),
        "index": float(1 - np.abs(pc1).mean() ** 2 / (pc1**2).mean()),
        "skewness": float(abs((pc1**3).mean()) / pc1.var() ** 1.5),
    }


def _summary(rows: list[dict[str, float]]) -> Summary:
    """Each measure's median, 10th and 90th percentile over ``rows``."""
    out = {}
    for key, _ in MEASURES:
        values = np.array([r[key] for r in rows])
        out[key] = tuple(float(np.quantile(values, q)) for q in (0.5, 0.1, 0.9))
    return out  # type: ignore[return-value]


def _strongest(codes: NDArray[np.float64], values: NDArray[np.float64]) -> NDArray[np.float64]:
    """The codes of the ⌈N/2⌉ largest values, as ``significance`` tests them."""
    return codes[np.argsort(-values, kind="stable")[: (codes.shape[0] + 1) // 2]]


def tail_weight(
    seeds: tuple[int, ...],
    images: int,
    k: int,
    cloud: Cloud,
    pair: Callable[[Setting, int], tuple[str, str]],
) -> dict[str, tuple[int, Summary]]:
    """Per group (``monosemantic``, ``planted``, ``gauss``, ``t5``): (count, summary)."""
    mono: list[dict[str, float]] = []
    planted: list[dict[str, float]] = []
    for s in (s for s in SETTINGS if not s.identifiable):
        for seed in seeds:
            model, _ = zoo.planted_network(pair(s, seed), s.distractors, seed, cross=s.cross)
            x, _ = zoo.concept_images(images, size=zoo.PLANTED_SIZE, seed=1000 + seed)
            result = pp.scan(model, "features.6", x, k=k, progress=False)
            for row in result.table():
                if row["flags"]:  # dead or constant: never called, nothing to measure
                    continue
                top = result.top(row["channel"])
                codes = _strongest(top.codes.double().numpy(), top.values.double().numpy())
                group = planted if row["channel"] == zoo.PLANTED_TARGET[1] else mono
                group.append(measures(codes))
    n, c = (k + 1) // 2, CHANNELS
    out = {
        "monosemantic": (len(mono), _summary(mono)),
        "planted": (len(planted), _summary(planted)),
    }
    for kind in ("gauss", "t5"):
        rng = np.random.default_rng(2222)
        rows = [measures(cloud(rng, n, c, kind)) for _ in range(CLOUDS)]
        out[kind] = (CLOUDS, _summary(rows))
    for name, (count, summary) in out.items():
        cells = ", ".join(f"{key} {summary[key][0]:.2f}" for key, _ in MEASURES)
        print(f"  {name:<13} ({count}): {cells}", flush=True)
    return out


def section(tails: dict[str, tuple[int, Summary]], seeds: tuple[int, ...], k: int) -> list[str]:
    """The markdown lines of the tail-weight table and what it says."""
    labels = {
        "monosemantic": "planted monosemantic detectors",
        "planted": "planted polysemantic units",
        "gauss": "one Gaussian (same N, C)",
        "t5": "one t cloud, 5 d.o.f. (same N, C)",
    }
    present = [m for m in MEASURES if m[0] in tails["monosemantic"][1]]  # saved before: no skew
    lines = [
        "## What one meaning looks like: the detectors' tail weight",
        "",
        f"Measured on the tuning seeds ({', '.join(map(str, seeds))}), every setting: the codes "
        f"of the strongest half of each channel's top {k} (what the test sees; 5 channels), "
        "against synthetic clouds of the same size. Median [10th–90th percentile]; "
        "`python -m benchmarks.verdicts --parts tails` reruns it.",
        "",
        "| codes | n | " + " | ".join(h for _, h in present) + " |",
        "|---|---|" + "---|" * len(present),
    ]
    for name, (count, summary) in tails.items():
        cells = " | ".join(
            f"{summary[key][0]:.2f} [{summary[key][1]:.2f}, {summary[key][2]:.2f}]"
            for key, _ in present
        )
        lines.append(f"| {labels.get(name, name)} | {count} | {cells} |")
    shares, values = [], []
    for key, heading in TAIL_MEASURES:
        gauss, t5 = tails["gauss"][1][key][0], tails["t5"][1][key][0]
        values.append((tails["monosemantic"][1][key][0] - gauss) / (t5 - gauss))
        shares.append(f"{heading} {values[-1]:.0%}")
    light = all(share < 0.5 for share in values)
    lines += [
        "",
        "Where the detectors' medians lie on the way from the Gaussian (0 %) to the t cloud "
        f"(100 %): {', '.join(shares)}. "
        + (
            "One meaning is mildly heavier-tailed than one Gaussian and far lighter-tailed "
            "than a t cloud with 5 degrees of freedom: the t5 rows of the goals table are a "
            "stress test of the null, not a model of a monosemantic unit."
            if light
            else "One meaning is at least half-way to a t cloud with 5 degrees of freedom on "
            "some measure: the t5 rows of the goals table are close to what a monosemantic "
            "unit looks like."
        ),
        "",
    ]
    return lines


#: Candidate nulls and statistics measured while tuning (planted seeds 0–4: 35 planted units,
#: 145 monosemantic channels; synthetic clouds as in the goals table, ``n`` datasets each) and
#: rejected: (what, the measurements, why rejected).
CANDIDATES = (
    ("the Gaussian null (the test)",
     "planted 35/35; monosemantic q 3/145, p 9/145; t5 as in the goals table", "-"),
    ("spatial signs (rows centred at the spatial median, scaled to unit norm), null: the "
     "rotation draws mapped the same way", "planted 13/35",
     "power: the robust centre lies inside the larger group"),
    ("spatial signs centred at the mean, null covariance the codes' sample covariance",
     "planted 34/35; monosemantic q 3/145, p 8/145; t5 C = 64: k = 100 6/100, k = 1000 "
     "17/100; Gaussian 4/100, 3/100",
     "anti-conservative on t5 with many rows: heavy rows bend the sample covariance the null "
     "is drawn with"),
    ("spatial signs centred at the mean, null covariance that of the radially Gaussianized "
     "codes (Mahalanobis radii mapped by rank onto the chi quantiles, 3 rounds: a robust shape)",
     "t5 6/100, 4/100, 4/100, 4/40 and Gaussian 4/100, 3/100, 3/100, 2/40 at (C, k) = (64, "
     "100), (384, 100), (64, 1000), (384, 1000); power 20/20 (64, 100); planted 35/35 "
     "(largest p 0.009, the Gaussian null's 1e-30); monosemantic q 3/145, p 10/145; zoo "
     "`concepts-merged` q = 0.21",
     "calibrated, but loses power: signs of an elongated cloud crowd at both ends of its "
     "leading axis, in the null as in the codes (the antipodal artefact), and the radii that "
     "separate two groups are gone; a zoo model card's unit is no longer called"),
    ("the same, the signs taken of the Gaussianized codes", "planted 32/35", "power"),
    ("the 2-means index of the radially Gaussianized codes, null draws Gaussianized alike",
     "planted 35/35; monosemantic q 14/145, p 22/145 (null draws left as they are: q 11, p 22)",
     "calls detectors: without their mild tails they look clustered"),
    ("Huber-type shrinkage of the Mahalanobis radii (robust shape as above) beyond the chi "
     "quantile 0.9 / 0.75, codes and null draws alike",
     "monosemantic q 8/145, p 15/145 / q 7/145, p 11/145", "calls detectors"),
    ("null rows multivariate t, d.o.f. from the PC-1 excess kurtosis (4 + 6 / kurtosis), "
     "whitened to the codes' exact sample covariance",
     "monosemantic q 6/145, p 19/145; t5 C = 64: 0/100 at k = 100 and 1,000 (also 0/40 with "
     "the true 5 d.o.f.)",
     "calls detectors, and does not calibrate t5: given their sample covariance, t codes are "
     "no random rotation of a t cloud"),
    ("an elliptical null drawn i.i.d.: random directions through Tyler's shape times the "
     "codes' Tyler radii, no conditioning on the sample covariance",
     "planted 35/35; monosemantic q 4/145, p 6/145; t5 and Gaussian C = 64, k = 1000: 0/100 "
     "each",
     "conservative everywhere in high dimension: draws from an estimated shape are more "
     "elongated than the codes (why the test is a rotation test)"),
    ("Bonferroni of the Gaussian test and the signs test above, p = 2 min(p1, p2)",
     "planted 35/35; monosemantic q 3/145, p 7/145; t5 10/200, 11/200, 1/100 at (64, 100), "
     "(384, 100), (64, 1000); Gaussian 7/200, 4/200, 2/100",
     "conservative on t5 with many rows (1 %): each half runs at alpha / 2"),
    ("the closest: min-p of two statistics against one null (`significance(method=\"minp\")`): "
     "rotation draws with the Gaussianized codes' covariance; the 2-means index and the 2-means "
     "index of the spatial signs (centred at the mean), p from the smaller of the two ranks over "
     "the same 200 draws (Westfall–Young), below 1/201 twice the smaller normal tail",
     "`python -m benchmarks.verdicts --tuning --method minp` (200 null sets; 100 at (384, "
     "1000): `--sizes 384/1000/100`; the synthetic rows on the report's clouds: `--tuning` "
     "drew them until the tuning clouds got their own stream; `--parts synthetic --method "
     "minp` without `--tuning` redraws them): Gaussian 17/200, 8/200, 4/200, 1/100; t (ν = 14.1) "
     "15/200, 9/200, 16/200, 5/100; skewed 13/200, 7/200, 5/200, 0/100; t5 6/200, "
     "13/200, 6/200, 12/100 at (C, k) = (64, 100), (384, 100), (64, 1000), (384, 1000); power "
     "40/40, 40/40, 20/20, 10/10; planted 35/35; monosemantic q 4/145, p 11/145 (the Gaussian "
     "null on the same networks: q 3, p 9); "
     "zoo `concepts-merged` q = 1.3e-05, `digits-merged` q = 1.5e-08; AlexNet scan 0.97× (1 "
     "channel tested), all 256 channels tested 1.60× (every null draw is made: no early stop)",
     "out of the 2–8 % band on the Gaussian at (64, 100), 8.5 % (there the test is exact: with "
     "fewer codes than channels there is nothing to Gaussianize, so chance, as is the Gaussian "
     "null's 7.5 % on the same clouds) and at (384, 1000), 1 % (the Gaussian null: 3.5 %); on "
     "the skewed cloud at (384, 1000), 0 % (1 %); and anti-conservative on t5 at (384, 1000), "
     "12 % (0 %): with 500 codes in 384 channels the Gaussianized covariance is not the one "
     "the codes are drawn with. More detectors on the single-unit rule (11 against 9/145)"),
    ("min-p as above, Gaussianized only with at least 4 codes per dimension (fewer: the sample "
     "covariance)",
     "on the tuning clouds (their own stream; 200 null sets, 100 at (384, 1000) with 100 draws): "
     "Gaussian 18/200, 5/200, 10/200, 3/100; t (ν = 14.1) 11/200, 5/200, 13/200, 5/100; skewed "
     "19/200, 8/200, 12/200, 2/100; t5 10/200, 22/200, 7/200, 17/100 at (C, k) = (64, 100), "
     "(384, 100), (64, 1000), (384, 1000); the planted networks as min-p (30 codes per dimension "
     "there)",
     "the gate brings the Gaussian at (384, 1000) into the band, but out of it on the Gaussian "
     "(9.0 %) and the skewed cloud (9.5 %) at (64, 100), where no code is Gaussianized and the "
     "test is exact for the Gaussian; anti-conservative on t5 with many channels (11 %, 17 %): a "
     "heavy-tailed single cloud called at more than 3× alpha, the wrong side for a verdict"),
)  # fmt: skip


def why_gaussian() -> list[str]:
    """The markdown lines of 'Why the null stays one Gaussian', with the rejected candidates."""
    lines = [
        "## Why the null stays one Gaussian",
        "",
        "Heavy tails make the test conservative: the 2-means split of a heavy-tailed cloud "
        "captures less of its variance than the split of a Gaussian with the same covariance. "
        "An *elliptical* null fixes that for the t clouds: each code keeps its radius (its "
        "Mahalanobis norm under Tyler's M-estimator of the shape, which heavy rows do not "
        "inflate) and gets a random direction, which is exact for every elliptical cloud and "
        "the Gaussian rotation null itself when there are fewer codes than channels (then "
        "every code has the same Mahalanobis norm). Measured while tuning (planted seeds 0–4, "
        "and t clouds of 500 codes in 64 channels), it brought the t clouds' false-positive "
        "rate to alpha, but it called 16/145 monosemantic planted detectors, several times as "
        "many as the Gaussian null, over the 5 % goal. Keeping the codes' own Mahalanobis "
        "norms under the sample covariance instead did not move the t clouds at all; giving "
        "the Gaussian null's rows Tyler's radii (matched by rank, the sample covariance kept) "
        "calibrated the t clouds too but called still more detectors (27–34/136).",
        "",
        "The table above says why: the detectors are mildly heavier-tailed than one Gaussian, "
        "so every null that adapts to tails also moves towards them, and they are not "
        "elliptical either. A statistic blind to the radii (spatial signs) leaves the detectors"
        " alone but loses the power that the radii carry. The candidates below were measured "
        "while tuning (seeds 0–4; t5 and Gaussian counts are false positives at alpha 0.05 out "
        "of n synthetic clouds of the goals table's kind; 'p' is the single-unit rule): none "
        "meets every goal, so the null stays one Gaussian and the t-cloud rows stay below the "
        "band: conservative, not anti-conservative.",
        "",
        "| candidate | measured | why not |",
        "|---|---|---|",
    ]
    lines += [f"| {what} | {found} | {why} |" for what, found, why in CANDIDATES]
    return [*lines, ""]
