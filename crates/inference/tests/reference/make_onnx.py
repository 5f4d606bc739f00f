"""ONNX fixtures for flywheel-inference: scikit-learn models exported with skl2onnx
(zipmap off, FP32 input `X`), and scikit-learn's own predictions on 40 test rows.

Run from this directory with scikit-learn, skl2onnx and onnx installed: python make_onnx.py
"""
import json

import numpy as np
import skl2onnx
import sklearn
from skl2onnx import to_onnx
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

base = "../../../train/tests/reference/"


def load(name):
    data = np.loadtxt(base + name + ".csv", delimiter=",", skiprows=1)
    return data[:, :-1].astype(np.float32), data[:, -1]


reference = {"sklearn": sklearn.__version__, "skl2onnx": skl2onnx.__version__, "models": {}}
cases = [
    ("logistic_binary", "binary", LogisticRegression(max_iter=500), True),
    ("logistic_multiclass", "multiclass", LogisticRegression(max_iter=500), True),
    ("tree_multiclass", "multiclass", DecisionTreeClassifier(max_depth=5, random_state=0), True),
    ("forest_multiclass", "multiclass", RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0), True),
    ("linear_regression", "regression", LinearRegression(), False),
    ("scaled_logistic", "binary", make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), True),
]
for name, dataset, model, classifier in cases:
    x, y = load(dataset + "_train")
    xt, _ = load(dataset + "_test")
    xt = xt[:40]
    if classifier:
        y = y.astype(np.int64)
    model.fit(x, y)
    options = {id(model): {"zipmap": False}} if classifier and not hasattr(model, "steps") else None
    if hasattr(model, "steps"):
        options = {id(model.steps[-1][1]): {"zipmap": False}}
    onx = to_onnx(model, x[:1], options=options, target_opset=17)
    with open(f"{name}.onnx", "wb") as f:
        f.write(onx.SerializeToString())
    entry = {"rows": xt.tolist()}
    if classifier:
        entry["labels"] = model.predict(xt).astype(int).tolist()
        entry["probabilities"] = model.predict_proba(xt).tolist()
    else:
        entry["values"] = model.predict(xt).tolist()
    reference["models"][name] = entry

with open("onnx_reference.json", "w") as f:
    json.dump(reference, f)
    f.write("\n")
print({k: len(v["rows"]) for k, v in reference["models"].items()})
