"""Reference data for flywheel-train: datasets with a fixed train/test split, what
scikit-learn reaches on them, and metric values on fixed predictions.

Run from this directory with scikit-learn installed:  python make_reference.py
Writes *.csv and reference.json next to this script.
"""
import json

import numpy as np
import sklearn
from sklearn import metrics
from sklearn.cluster import KMeans
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier


def write(name, x, y, columns):
    header = ",".join(columns + ["label"])
    rows = [",".join(f"{v:.10g}" for v in row) + f",{t}" for row, t in zip(x, y)]
    with open(name, "w") as f:
        f.write(header + "\n" + "\n".join(rows) + "\n")


def split(x, y, n_test):
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


ref = {"sklearn": sklearn.__version__, "models": {}, "metrics": {}}

# Binary classification.
x, y = make_classification(n_samples=1200, n_features=6, n_informative=4, n_redundant=1,
                           class_sep=0.8, flip_y=0.03, random_state=7)
cols = [f"f{i}" for i in range(x.shape[1])]
xtr, ytr, xte, yte = split(x, y, 300)
write("binary_train.csv", xtr, ytr, cols)
write("binary_test.csv", xte, yte, cols)
models = {
    "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression(C=1.0)),
    "decision_tree": DecisionTreeClassifier(max_depth=6, random_state=0),
    "random_forest": RandomForestClassifier(n_estimators=100, random_state=0),
}
for name, model in models.items():
    model.fit(xtr, ytr)
    pred = model.predict(xte)
    proba = model.predict_proba(xte)
    ref["models"][f"binary/{name}"] = {
        "accuracy": metrics.accuracy_score(yte, pred),
        "roc_auc": metrics.roc_auc_score(yte, proba[:, 1]),
    }

# Multiclass.
x, y = make_classification(n_samples=1200, n_features=6, n_informative=5, n_redundant=0,
                           n_classes=3, class_sep=1.0, random_state=11)
xtr, ytr, xte, yte = split(x, y, 300)
write("multiclass_train.csv", xtr, ytr, cols)
write("multiclass_test.csv", xte, yte, cols)
for name, model in {
    "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression(C=1.0)),
    "random_forest": RandomForestClassifier(n_estimators=100, random_state=0),
}.items():
    model.fit(xtr, ytr)
    pred = model.predict(xte)
    ref["models"][f"multiclass/{name}"] = {
        "accuracy": metrics.accuracy_score(yte, pred),
        "f1": metrics.f1_score(yte, pred, average="macro"),
    }

# Regression.
x, y = make_regression(n_samples=1000, n_features=5, n_informative=4, noise=10.0, random_state=3)
xtr, ytr, xte, yte = split(x, y, 250)
write("regression_train.csv", xtr, [f"{v:.10g}" for v in ytr], cols[:5])
write("regression_test.csv", xte, [f"{v:.10g}" for v in yte], cols[:5])
ytr = np.array([float(f"{v:.10g}") for v in ytr])
yte = np.array([float(f"{v:.10g}") for v in yte])
xtr = np.array([[float(f"{v:.10g}") for v in r] for r in xtr])
xte = np.array([[float(f"{v:.10g}") for v in r] for r in xte])
for name, model in {
    "linear_regression": LinearRegression(),
    "ridge": Ridge(alpha=1.0),
    "random_forest": RandomForestRegressor(n_estimators=100, random_state=0),
}.items():
    model.fit(xtr, ytr)
    pred = model.predict(xte)
    entry = {
        "rmse": float(np.sqrt(metrics.mean_squared_error(yte, pred))),
        "mae": metrics.mean_absolute_error(yte, pred),
        "r2": metrics.r2_score(yte, pred),
    }
    if name in ("linear_regression", "ridge"):
        entry["coef"] = model.coef_.tolist()
        entry["intercept"] = float(model.intercept_)
    ref["models"][f"regression/{name}"] = entry

# K-means on the multiclass features: inertia of sklearn's fit on the test rows.
km = make_pipeline(StandardScaler(), KMeans(n_clusters=3, n_init=3, random_state=0))
x, y = make_classification(n_samples=1200, n_features=6, n_informative=5, n_redundant=0,
                           n_classes=3, class_sep=1.0, random_state=11)
xtr, xte = x[300:], x[:300]
km.fit(xtr)
ref["models"]["multiclass/kmeans"] = {"inertia": float(-km.score(xte))}

# Metrics on fixed predictions (exact comparisons).
rng = np.random.default_rng(5)
truth = rng.integers(0, 2, 200)
score = np.clip(truth * 0.3 + rng.random(200) * 0.7, 0, 1).round(2)  # ties on purpose
pred = (score >= 0.5).astype(int)
ref["metrics"]["binary"] = {
    "truth": truth.tolist(), "score": score.tolist(), "pred": pred.tolist(),
    "accuracy": metrics.accuracy_score(truth, pred),
    "precision": metrics.precision_score(truth, pred),
    "recall": metrics.recall_score(truth, pred),
    "f1": metrics.f1_score(truth, pred),
    "roc_auc": metrics.roc_auc_score(truth, score),
    "log_loss": metrics.log_loss(truth, np.column_stack([1 - score, score])),
}
truth3 = rng.integers(0, 3, 150)
raw = rng.random((150, 3)) + np.eye(3)[truth3] * 0.8
proba3 = raw / raw.sum(axis=1, keepdims=True)
pred3 = proba3.argmax(axis=1)
ref["metrics"]["multiclass"] = {
    "truth": truth3.tolist(), "proba": proba3.tolist(), "pred": pred3.tolist(),
    "accuracy": metrics.accuracy_score(truth3, pred3),
    "precision": metrics.precision_score(truth3, pred3, average="macro", zero_division=0),
    "recall": metrics.recall_score(truth3, pred3, average="macro", zero_division=0),
    "f1": metrics.f1_score(truth3, pred3, average="macro", zero_division=0),
    "roc_auc": metrics.roc_auc_score(truth3, proba3, multi_class="ovr", average="macro"),
    "log_loss": metrics.log_loss(truth3, proba3),
}
yt = rng.normal(10, 3, 100)
yp = yt + rng.normal(0, 1, 100)
ref["metrics"]["regression"] = {
    "truth": yt.tolist(), "pred": yp.tolist(),
    "rmse": float(np.sqrt(metrics.mean_squared_error(yt, yp))),
    "mae": metrics.mean_absolute_error(yt, yp),
    "r2": metrics.r2_score(yt, yp),
}

with open("reference.json", "w") as f:
    json.dump(ref, f, indent=1, sort_keys=True)
    f.write("\n")
print(json.dumps(ref["models"], indent=1))
