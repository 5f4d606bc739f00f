"""ONNX fixtures for flywheel-inference: every scikit-learn family skl2onnx exports that the
project serves (linear models, trees, forests, gradient boosting, scalers, imputers and
pipelines of them; zipmap off, FP32 input `X`), and scikit-learn's own answers on 40 test
rows. The Rust test compares each output with a tolerance of 1e-5 (labels exactly).

Run from this directory with scikit-learn, skl2onnx and onnx installed:
    python make_onnx.py
"""
import glob
import json
import os

import numpy as np
import skl2onnx
import sklearn
from skl2onnx import to_onnx
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    Perceptron,
    RidgeClassifier,
    SGDClassifier,
)
from sklearn.svm import LinearSVC
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

base = "../../../train/tests/reference/"


def load(name):
    data = np.loadtxt(base + name + ".csv", delimiter=",", skiprows=1)
    return data[:, :-1].astype(np.float32), data[:, -1]


def with_gaps(x, every):
    """A copy with every `every`-th value missing (NaN), for the models that take them."""
    x = x.copy()
    flat = x.reshape(-1)
    flat[::every] = np.nan
    return x


# (file name, dataset, estimator, kind, missing values in the rows). Kind "margin": a classifier
# without probabilities, whose second output holds decision_function's margins.
cases = [
    ("logistic_binary", "binary", LogisticRegression(max_iter=500), "classifier", False),
    ("logistic_multiclass", "multiclass", LogisticRegression(max_iter=500), "classifier", False),
    ("sgd_binary", "binary", SGDClassifier(loss="log_loss", random_state=0), "classifier", False),
    ("ridge_classifier_binary", "binary", RidgeClassifier(), "margin", False),
    ("linear_svc_binary", "binary", LinearSVC(), "margin", False),
    ("linear_svc_multiclass", "multiclass", LinearSVC(), "margin", False),
    ("perceptron_binary", "binary", Perceptron(random_state=0), "margin", False),
    ("tree_binary", "binary", DecisionTreeClassifier(max_depth=6, random_state=0), "classifier", False),
    ("tree_multiclass", "multiclass", DecisionTreeClassifier(max_depth=5, random_state=0), "classifier", False),
    ("forest_binary", "binary", RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0), "classifier", False),
    ("forest_multiclass", "multiclass", RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0), "classifier", False),
    ("extra_trees_binary", "binary", ExtraTreesClassifier(n_estimators=20, max_depth=6, random_state=0), "classifier", False),
    ("gradient_boosting_binary", "binary", GradientBoostingClassifier(n_estimators=30, random_state=0), "classifier", False),
    ("gradient_boosting_multiclass", "multiclass", GradientBoostingClassifier(n_estimators=20, random_state=0), "classifier", False),
    ("hist_gradient_boosting_binary", "binary", HistGradientBoostingClassifier(max_iter=30, random_state=0), "classifier", True),
    ("hist_gradient_boosting_multiclass", "multiclass", HistGradientBoostingClassifier(max_iter=20, random_state=0), "classifier", True),
    ("linear_regression", "regression", LinearRegression(), "regressor", False),
    ("ridge", "regression", Ridge(alpha=2.0), "regressor", False),
    ("lasso", "regression", Lasso(alpha=0.1), "regressor", False),
    ("elastic_net", "regression", ElasticNet(alpha=0.1, l1_ratio=0.3), "regressor", False),
    ("tree_regression", "regression", DecisionTreeRegressor(max_depth=8, random_state=0), "regressor", False),
    ("forest_regression", "regression", RandomForestRegressor(n_estimators=30, max_depth=8, random_state=0), "regressor", False),
    ("extra_trees_regression", "regression", ExtraTreesRegressor(n_estimators=20, max_depth=8, random_state=0), "regressor", False),
    ("gradient_boosting_regression", "regression", GradientBoostingRegressor(n_estimators=50, random_state=0), "regressor", False),
    ("hist_gradient_boosting_regression", "regression", HistGradientBoostingRegressor(max_iter=30, random_state=0), "regressor", True),
    ("standard_scaler", "regression", StandardScaler(), "transformer", False),
    ("minmax_scaler", "regression", MinMaxScaler(), "transformer", False),
    ("robust_scaler", "regression", RobustScaler(), "transformer", False),
    ("maxabs_scaler", "regression", MaxAbsScaler(), "transformer", False),
    ("imputer", "regression", SimpleImputer(strategy="median"), "transformer", True),
    ("scaled_logistic", "binary", make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), "classifier", False),
    ("imputed_scaled_forest", "multiclass", make_pipeline(SimpleImputer(), MinMaxScaler(), RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0)), "classifier", True),
    ("scaled_gradient_boosting_regression", "regression", make_pipeline(RobustScaler(), GradientBoostingRegressor(n_estimators=20, random_state=0)), "regressor", False),
]

for old in glob.glob("*.onnx"):
    os.remove(old)
reference = {"sklearn": sklearn.__version__, "skl2onnx": skl2onnx.__version__, "models": {}, "not_exportable": {}}
for name, dataset, model, kind, gaps in cases:
    x, y = load(dataset + "_train")
    xt, _ = load(dataset + "_test")
    xt = xt[:40]
    if gaps:
        x, xt = with_gaps(x, 17), with_gaps(xt, 7)
    if kind in ("classifier", "margin"):
        y = y.astype(np.int64)
    if kind == "transformer":
        model.fit(x)
    else:
        model.fit(x, y)
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    options = {id(final): {"zipmap": False}} if kind == "classifier" or isinstance(final, (RidgeClassifier, Perceptron)) else None
    try:
        onx = to_onnx(model, x[:1], options=options, target_opset=17)
    except Exception as e:  # the exporter's own limits, recorded so the docs can say so
        reference["not_exportable"][name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        continue
    with open(f"{name}.onnx", "wb") as f:
        f.write(onx.SerializeToString())
    # NaN is not JSON: missing values travel as null.
    rows = [[None if np.isnan(v) else float(v) for v in row] for row in xt]
    if kind == "classifier":
        outputs = {
            "label": model.predict(xt).astype(int).tolist(),
            "probabilities": model.predict_proba(xt).tolist(),
        }
    elif kind == "regressor":
        outputs = {"variable": model.predict(xt).reshape(-1, 1).tolist()}
    elif kind == "margin":
        margins = model.decision_function(xt)
        second = onx.graph.output[1].name
        if margins.ndim == 2:
            laid_out = margins
        elif isinstance(final, Perceptron):
            laid_out = np.stack([-margins, margins], axis=1)  # skl2onnx writes both classes
        else:
            laid_out = margins.reshape(-1, 1)  # the positive class's margin only
        outputs = {"label": model.predict(xt).astype(int).tolist(), second: laid_out.tolist()}
    else:
        outputs = {"variable": model.transform(xt).tolist()}
    reference["models"][name] = {"rows": rows, "outputs": outputs}

# What tract cannot run, kept so the refusal is tested: scikit-learn's default ZipMap output
# (a sequence of maps; export with zipmap off instead).
x, y = load("binary_train")
zipped = to_onnx(LogisticRegression(max_iter=500).fit(x, y.astype(np.int64)), x[:1], target_opset=17)
with open("logistic_zipmap.onnx", "wb") as f:
    f.write(zipped.SerializeToString())
reference["refused"] = {"logistic_zipmap": "ZipMap"}

with open("onnx_reference.json", "w") as f:
    json.dump(reference, f)
    f.write("\n")
print(f"{len(reference['models'])} models")
