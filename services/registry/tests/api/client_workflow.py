"""The stock mlflow client against a Flywheel registry (MLFLOW_TRACKING_URI).

Run by the Rust test `mlflow_client_workflow` with the mlflow from the virtualenv that
scripts/test.sh prepares. Every step is something users do; an assertion error or a client
exception fails the test."""
import json
import os
import tempfile

import mlflow
from mlflow import MlflowClient

mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
client = MlflowClient()

experiment = mlflow.set_experiment("client-check")
assert mlflow.set_experiment("client-check").experiment_id == experiment.experiment_id

with mlflow.start_run(run_name="trial") as run:
    run_id = run.info.run_id
    mlflow.log_param("lr", 0.01)
    mlflow.log_params({"depth": 3, "model": "tree"})
    for step in range(5):
        mlflow.log_metric("loss", 1 / (step + 1), step=step)
    mlflow.log_metrics({"acc": 0.9, "f1": 0.8})
    mlflow.log_metric("weird", float("nan"))
    mlflow.set_tag("team", "growth")
    mlflow.set_tags({"owner": "alice"})
    mlflow.log_dict({"k": [1, 2]}, "config/params.json")
    mlflow.log_text("hello", "notes.txt")

with mlflow.start_run(run_name="other"):
    mlflow.log_params({"model": "linear"})
    mlflow.log_metric("acc", 0.4)

got = client.get_run(run_id)
assert got.info.status == "FINISHED", got.info.status
assert got.info.run_name == "trial"
assert got.data.params == {"lr": "0.01", "depth": "3", "model": "tree"}, got.data.params
assert got.data.metrics["loss"] == 0.2 and got.data.metrics["acc"] == 0.9, got.data.metrics
assert got.data.metrics["weird"] != got.data.metrics["weird"], "NaN survives the round trip"
assert got.data.tags["team"] == "growth" and got.data.tags["owner"] == "alice"

history = client.get_metric_history(run_id, "loss")
assert [m.step for m in history] == list(range(5)), history
assert [round(m.value, 6) for m in history] == [1.0, 0.5, 0.333333, 0.25, 0.2]

found = client.search_runs(
    [experiment.experiment_id], "metrics.acc > 0.5 and params.model = 'tree'", order_by=["metrics.acc DESC"]
)
assert [r.info.run_id for r in found] == [run_id], found
everything = client.search_runs([experiment.experiment_id], order_by=["metrics.acc ASC"])
assert [r.info.run_name for r in everything] == ["other", "trial"]

artifacts = sorted((a.path, a.is_dir) for a in client.list_artifacts(run_id))
assert artifacts == [("config", True), ("notes.txt", False)], artifacts
with tempfile.TemporaryDirectory() as tmp:
    path = mlflow.artifacts.download_artifacts(artifact_uri=f"{got.info.artifact_uri}/config/params.json", dst_path=tmp)
    with open(path) as f:
        assert json.load(f) == {"k": [1, 2]}

try:
    client.get_run("0123456789abcdef0123456789abcdef")
    raise AssertionError("a missing run was found")
except mlflow.exceptions.MlflowException as e:
    assert e.error_code == "RESOURCE_DOES_NOT_EXIST", e.error_code

# The model registry.
client.create_registered_model("churn", tags={"team": "growth"}, description="who leaves")
try:
    client.create_registered_model("churn")
    raise AssertionError("a duplicate registered model was accepted")
except mlflow.exceptions.MlflowException as e:
    assert e.error_code == "RESOURCE_ALREADY_EXISTS", e.error_code
v1 = client.create_model_version("churn", f"runs:/{run_id}/model", run_id=run_id)
assert (v1.version, v1.status, v1.current_stage) == ("1", "READY", "None"), v1
v2 = client.create_model_version("churn", "s3://models/churn/2", tags={"candidate": "yes"})
assert v2.version == "2"
client.set_registered_model_alias("churn", "champion", "1")
assert client.get_model_version_by_alias("churn", "champion").version == "1"
client.set_registered_model_alias("churn", "champion", "2")
model = client.get_registered_model("churn")
assert model.aliases == {"champion": "2"}, model.aliases
assert model.tags == {"team": "growth"}
client.set_model_version_tag("churn", "1", "validated", "true")
assert client.get_model_version("churn", "1").tags == {"validated": "true"}
versions = client.search_model_versions("name = 'churn'", order_by=["version_number ASC"])
assert [v.version for v in versions] == ["1", "2"], versions
assert [m.name for m in client.search_registered_models()] == ["churn"]
client.delete_registered_model_alias("churn", "champion")
assert client.get_registered_model("churn").aliases == {}
assert client.get_model_version_download_uri("churn", "2") == "s3://models/churn/2"

# MLflow 3's log_model goes through LoggedModels; registering on the way creates a version.
try:
    import sklearn  # noqa: F401
except ImportError:
    sklearn = None
if sklearn is not None:
    from sklearn.linear_model import LogisticRegression

    X = [[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]]
    y = [0, 1, 0, 1]
    model = LogisticRegression().fit(X, y)
    with mlflow.start_run(run_name="sklearn") as sk_run:
        mlflow.log_metric("accuracy", 1.0)
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name="sk-churn")
    assert info.model_id.startswith("m-"), info.model_id
    registered = client.get_model_version("sk-churn", "1")
    assert registered.run_id == sk_run.info.run_id, (registered.run_id, sk_run.info.run_id)
    with mlflow.start_run(run_name="sklearn-2"):
        mlflow.sklearn.log_model(model, name="model", registered_model_name="sk-churn")
    assert client.get_model_version("sk-churn", "2").version == "2"
    loaded = mlflow.sklearn.load_model("models:/sk-churn/1")
    assert list(loaded.predict(X)) == y
    logged = client.get_logged_model(info.model_id)
    assert logged.status == "READY" or str(logged.status).endswith("READY"), logged.status
    assert "sk-churn" in logged.tags.get("mlflow.modelVersions", ""), logged.tags
    print("sklearn log_model + registration + load passed")
else:
    raise AssertionError("scikit-learn is missing from the test virtualenv (scripts/test.sh installs it)")

print(f"mlflow {mlflow.__version__}: tracking workflow passed against {os.environ['MLFLOW_TRACKING_URI']}")
