"""Generates the profile test fixtures and their expected values with numpy and pyarrow.

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install numpy pyarrow
    /tmp/ref/bin/python crates/data/tests/reference/make_reference.py

Writes customers.csv, customers.parquet (same rows) and expected_profile.json next to this
script. The Rust tests read both files and must reproduce these numbers (1e-9 relative).
"""
import csv
import json
import pathlib
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = pathlib.Path(__file__).resolve().parent
QUANTILES = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]
BINS = 20
TOP_K = 20

rng = random.Random(20261127)
rows = []
for i in range(1000):
    age = rng.randint(18, 90) if rng.random() > 0.05 else None
    income = round(rng.lognormvariate(10.5, 0.6), 2) if rng.random() > 0.1 else None
    plan = rng.choices(["basic", "pro", "enterprise", "trial"], weights=[50, 30, 5, 15])[0]
    active = rng.random() > 0.3
    rows.append({"id": i + 1, "age": age, "income": income, "plan": plan, "active": active, "tenure": 12.0})

with open(HERE / "customers.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else ("true" if v is True else "false" if v is False else v)) for k, v in row.items()})

table = pa.table({
    "id": pa.array([r["id"] for r in rows], pa.int64()),
    "age": pa.array([r["age"] for r in rows], pa.int64()),
    "income": pa.array([r["income"] for r in rows], pa.float64()),
    "plan": pa.array([r["plan"] for r in rows], pa.string()),
    "active": pa.array([r["active"] for r in rows], pa.bool_()),
    "tenure": pa.array([r["tenure"] for r in rows], pa.float64()),
})
pq.write_table(table, HERE / "customers.parquet", compression="snappy")


def numeric(name, logical):
    values = np.array([r[name] for r in rows if r[name] is not None], dtype=np.float64)
    counts, edges = np.histogram(values, bins=BINS)
    return {
        "name": name, "data_type": logical, "count": int(values.size), "nulls": len(rows) - int(values.size),
        "distinct": int(np.unique(values).size),
        "min": float(values.min()), "max": float(values.max()), "mean": float(values.mean()),
        "std": float(values.std(ddof=1)),
        "quantiles": [[q, float(np.quantile(values, q))] for q in QUANTILES],
        "edges": [float(e) for e in edges], "counts": [int(c) for c in counts],
    }


def categorical(name, logical, render):
    values = [render(r[name]) for r in rows if r[name] is not None]
    counts = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_K]
    return {"name": name, "data_type": logical, "count": len(values), "nulls": len(rows) - len(values),
            "distinct": len(counts), "top": [[k, v] for k, v in top]}


expected = {
    "row_count": len(rows),
    "columns": [
        numeric("id", "int"),
        numeric("age", "int"),
        numeric("income", "float"),
        categorical("plan", "string", str),
        categorical("active", "bool", lambda b: "true" if b else "false"),
        numeric("tenure", "float"),
    ],
}
(HERE / "expected_profile.json").write_text(json.dumps(expected, indent=1) + "\n")
print("wrote", HERE)
