"""Per-call latency of flywheel-inference (tract + the project's ml operators) next to ONNX
Runtime on the same skl2onnx exports: batch 1 and 64, one thread, p50 and p99 in µs.

Needs scikit-learn, skl2onnx, onnx and onnxruntime (PyPI). From the repository root:
    python crates/inference/bench/onnx_vs_onnxruntime.py
It builds `cargo run --release -p flywheel-inference --example onnx_bench` and prints a
Markdown table (the one in docs/benchmarks.md). With `--save DIR` it also keeps the exported
models there (the serving benchmark takes `DIR/random_forest_classifier_200_trees.onnx`).
"""
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

CALLS = 2000


def models():
    xc, yc = make_classification(n_samples=4000, n_features=20, n_informative=10, random_state=0)
    xr, yr = make_regression(n_samples=4000, n_features=20, noise=5.0, random_state=0)
    xc, xr = xc.astype(np.float32), xr.astype(np.float32)
    yield "logistic regression, 20 features", make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(xc, yc), xc, True
    yield "linear regression, 20 features", LinearRegression().fit(xr, yr), xr, False
    yield "random forest classifier, 200 trees", RandomForestClassifier(n_estimators=200, max_depth=10, random_state=0).fit(xc, yc), xc, True
    yield "random forest regressor, 200 trees", RandomForestRegressor(n_estimators=200, max_depth=10, random_state=0).fit(xr, yr), xr, False
    yield "gradient boosting classifier, 100 trees", GradientBoostingClassifier(n_estimators=100, random_state=0).fit(xc, yc), xc, True


def ort_latency(path, x, batch):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x[:batch]}
    for _ in range(CALLS // 10):
        session.run(None, feed)
    times = []
    for _ in range(CALLS):
        started = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - started) * 1e6)
    times.sort()
    return times[len(times) // 2], times[len(times) * 99 // 100]


def flywheel_latency(path, batch):
    out = subprocess.run(
        ["cargo", "run", "-q", "--release", "-p", "flywheel-inference", "--example", "onnx_bench", "--", path, str(batch), str(CALLS)],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def main():
    save = sys.argv[sys.argv.index("--save") + 1] if "--save" in sys.argv else None
    if save:
        os.makedirs(save, exist_ok=True)
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "flywheel-inference", "--example", "onnx_bench"], check=True)
    print("| model | batch | flywheel p50 µs | flywheel p99 µs | ONNX Runtime p50 µs | ONNX Runtime p99 µs | ratio p50 |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, x, classifier in models():
            options = {id(model.steps[-1][1] if hasattr(model, "steps") else model): {"zipmap": False}} if classifier else None
            slug = name.split(",")[0].replace(" ", "_") + "_" + name.split(", ")[1].replace(" ", "_")
            path = os.path.join(save or tmp, slug + ".onnx")
            with open(path, "wb") as f:
                f.write(to_onnx(model, x[:1], options=options, target_opset=17).SerializeToString())
            for batch in (1, 64):
                ours = flywheel_latency(path, batch)
                theirs = ort_latency(path, x, batch)
                print(f"| {name} | {batch} | {ours[0]:.1f} | {ours[1]:.1f} | {theirs[0]:.1f} | {theirs[1]:.1f} | {ours[0] / theirs[0]:.2f}× |")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
