"""Reference values for flywheel-drift: Evidently 0.7's own drift functions (legacy stattests,
which its DataDriftPreset uses) and scipy on committed samples, so the Rust implementation is
checked against them (tolerance 1e-9 relative).

Needs evidently 0.7, scipy, numpy, pandas<2.3. From this directory: python make_reference.py
"""
import json

import evidently
import numpy as np
import pandas as pd
import scipy
from evidently.legacy.calculations.stattests import registry
from evidently.legacy.calculations.stattests.chisquare_stattest import _chi_stat_test
from evidently.legacy.calculations.stattests.hellinger_distance import _hellinger_distance
from evidently.legacy.calculations.stattests.jensenshannon import _jensenshannon
from evidently.legacy.calculations.stattests.psi import _psi
from evidently.legacy.calculations.stattests.utils import get_binned_data
from evidently.legacy.calculations.stattests.wasserstein_distance_norm import _wasserstein_distance_norm
from evidently.legacy.calculations.stattests.z_stattest import _z_stat_test
from evidently.legacy.core import ColumnType
from scipy import stats

rng = np.random.default_rng(20261127)


def r(x):
    """Rounded to 4 decimals: the JSON holds exactly the values both sides compute on."""
    return np.round(x, 4)


numeric = {
    "identical": (r(rng.normal(0, 1, 500)),) * 2,
    "mean_shift": (r(rng.normal(0, 1, 800)), r(rng.normal(0.5, 1, 600))),
    "variance_change": (r(rng.normal(0, 1, 1000)), r(rng.normal(0, 2, 1000))),
    "tiny": (r(rng.normal(0, 1, 8)), r(rng.normal(0.3, 1, 6))),
    "large": (r(rng.normal(0, 1, 3000)), r(rng.normal(0.1, 1.1, 2500))),
    "empty_bins": (r(rng.uniform(0, 1, 500)), r(rng.uniform(0.7, 1.0, 300))),
    "few_values": (rng.integers(1, 5, 300).astype(float), rng.integers(1, 6, 200).astype(float)),
    "two_values": (rng.integers(0, 2, 400).astype(float), (rng.uniform(0, 1, 300) < 0.7).astype(float)),
    "constant_same": (np.full(50, 3.0), np.full(40, 3.0)),
    "ks_unequal_moderate": (r(rng.normal(0, 1, 120)), r(rng.normal(0.15, 1, 90))),
    "ks_small_shift": (r(rng.normal(0, 1, 300)), r(rng.normal(0.1, 1, 250))),
    "ks_equal_sizes": (r(rng.normal(0, 1, 200)), r(rng.normal(0.1, 1, 200))),
}
categorical = {
    "categories_same": (rng.choice(["a", "b", "c"], 400, p=[0.5, 0.3, 0.2]), rng.choice(["a", "b", "c"], 300, p=[0.5, 0.3, 0.2])),
    "new_category": (rng.choice(["a", "b", "c"], 400, p=[0.5, 0.3, 0.2]), rng.choice(["a", "b", "c", "d"], 300, p=[0.3, 0.3, 0.2, 0.2])),
    "binary_shift": (rng.choice(["x", "y"], 500, p=[0.5, 0.5]), rng.choice(["x", "y"], 500, p=[0.7, 0.3])),
    "large_categories": (rng.choice(list("abcdefgh"), 3000), rng.choice(list("abcdefgh"), 2000, p=[0.2] + [0.8 / 7] * 7)),
    "constant_category": (np.array(["k"] * 30), np.array(["k"] * 20)),
}


def entry(reference, current, kind):
    ref, cur = pd.Series(reference), pd.Series(current)
    column_type = ColumnType.Numerical if kind == "numeric" else ColumnType.Categorical
    out = {"kind": kind, "reference": reference.tolist(), "current": current.tolist()}
    default = registry._get_default_stattest(ref, cur, column_type)
    out["default_method"] = default.name
    out["default_threshold"] = default.default_threshold
    results = {}
    results["psi"] = float(_psi(ref.copy(), cur.copy(), column_type, 0.1)[0])
    results["jensenshannon"] = float(_jensenshannon(ref.copy(), cur.copy(), column_type, 0.1)[0])
    results["hellinger"] = float(_hellinger_distance(ref.copy(), cur.copy(), column_type, 0.1)[0])
    if ref.nunique() + cur.nunique() > 0:
        results["chisquare"] = float(_chi_stat_test(ref.copy(), cur.copy(), column_type, 0.05)[0])
    if pd.concat([ref, cur]).nunique() <= 2:
        results["z"] = float(_z_stat_test(ref.copy(), cur.copy(), column_type, 0.05)[0])
    if kind == "numeric":
        results["wasserstein"] = float(_wasserstein_distance_norm(ref.copy(), cur.copy(), column_type, 0.1)[0])
        ks = stats.ks_2samp(reference, current)
        results["ks"] = float(ks.pvalue)
        out["ks_statistic"] = float(ks.statistic)
    # NaN (chi-square of a single category) is not JSON: null.
    out["scores"] = {k: (v if np.isfinite(v) else None) for k, v in results.items()}
    ref_percents, cur_percents = get_binned_data(ref, cur, column_type, 30, True)
    out["binned_reference"] = ref_percents.tolist()
    out["binned_current"] = cur_percents.tolist()
    return out


reference = {
    "evidently": evidently.__version__,
    "scipy": scipy.__version__,
    "numpy": np.__version__,
    "columns": {},
}
for name, (ref, cur) in numeric.items():
    reference["columns"][name] = entry(ref, cur, "numeric")
for name, (ref, cur) in categorical.items():
    reference["columns"][name] = entry(ref, cur, "categorical")
# The Kolmogorov distribution scipy's asymptotic KS uses (kstwo.sf), over its branches, and one
# large two-sample case (over 10 000 values, so ks_2samp goes asymptotic).
grid = []
for n in [5, 50, 140, 141, 500, 5000, 50000, 200000]:
    xs = {0.6 / n, 0.9 / n, 0.75, 1 - 0.5 / n}
    for nx2 in [0.3, 0.7, 1.0, 2.0, 3.5, 10.0, 100.0, 400.0]:
        xs.add(float(np.sqrt(nx2 / n)))
    for x in sorted(xs):
        if 0 < x < 1:
            grid.append([n, x, float(stats.kstwo.sf(x, n))])
reference["kolmogorov_sf"] = grid
big_ref, big_cur = np.round(rng.normal(0, 1, 12000), 2), np.round(rng.normal(0.03, 1, 3000), 2)
big = stats.ks_2samp(big_ref, big_cur)
reference["ks_large"] = {
    "reference": big_ref.tolist(),
    "current": big_cur.tolist(),
    "statistic": float(big.statistic),
    "p_value": float(big.pvalue),
}

with open("drift_reference.json", "w") as f:
    json.dump(reference, f)
    f.write("\n")
print({k: (v["default_method"], round(v["scores"][v["default_method"]], 6) if v["default_method"] in v["scores"] else None) for k, v in reference["columns"].items()})
