//! MLflow 3 LoggedModels over HTTP on both backends: create, finalize, search, run outputs,
//! and registering a version from `models:/<model_id>`.

use serde_json::json;

use crate::helpers::Registry;

on_both_backends!(logged_models_register_with_their_run);

async fn logged_models_register_with_their_run(r: &Registry) -> anyhow::Result<()> {
    let run = r.ok("runs/create", json!({"experiment_id": "0"})).await?;
    let run_id = run["run"]["info"]["run_id"]
        .as_str()
        .expect("run")
        .to_owned();
    let created = r
        .ok("logged-models", json!({"experiment_id": "0", "name": "model", "source_run_id": run_id, "params": [{"key": "C", "value": "1.0"}]}))
        .await?;
    let model_id = created["model"]["info"]["model_id"]
        .as_str()
        .expect("model id")
        .to_owned();
    assert!(model_id.starts_with("m-"));
    assert_eq!(created["model"]["info"]["status"], "LOGGED_MODEL_PENDING");
    assert_eq!(
        created["model"]["info"]["artifact_uri"],
        format!("mlflow-artifacts:/0/models/{model_id}/artifacts")
    );
    r.ok(
        "runs/outputs",
        json!({"run_id": run_id, "models": [{"model_id": model_id, "step": 0}]}),
    )
    .await?;
    let response = r
        .http
        .patch(r.url(&format!("/api/2.0/mlflow/logged-models/{model_id}")))
        .json(&json!({"status": "LOGGED_MODEL_READY"}))
        .send()
        .await?;
    assert_eq!(response.status(), 200);

    let found = r
        .ok(
            "logged-models/search",
            json!({"experiment_ids": ["0"], "filter": "name = 'model'"}),
        )
        .await?;
    assert_eq!(found["models"][0]["info"]["model_id"], model_id.as_str());
    assert_eq!(found["models"][0]["info"]["status"], "LOGGED_MODEL_READY");
    let (_, got) = r.get("runs/get", &[("run_id", run_id.as_str())]).await?;
    assert_eq!(
        got["run"]["outputs"]["model_outputs"],
        json!([{"model_id": model_id, "step": 0}])
    );

    r.ok("registered-models/create", json!({"name": "lm"}))
        .await?;
    let version = r
        .ok(
            "model-versions/create",
            json!({"name": "lm", "source": format!("models:/{model_id}"), "model_id": model_id}),
        )
        .await?;
    assert_eq!(
        version["model_version"]["run_id"],
        run_id.as_str(),
        "run filled from the LoggedModel"
    );
    let (_, uri) = r
        .get(
            "model-versions/get-download-uri",
            &[("name", "lm"), ("version", "1")],
        )
        .await?;
    assert_eq!(
        uri["artifact_uri"],
        format!("mlflow-artifacts:/0/models/{model_id}/artifacts")
    );
    let response = r
        .http
        .get(r.url(&format!("/api/2.0/mlflow/logged-models/{model_id}")))
        .send()
        .await?;
    let logged: serde_json::Value = response.json().await?;
    let tags = logged["model"]["info"]["tags"].as_array().expect("tags");
    let registrations = tags
        .iter()
        .find(|t| t["key"] == "mlflow.modelVersions")
        .expect("registrations tag");
    let parsed: serde_json::Value =
        serde_json::from_str(registrations["value"].as_str().expect("text"))?;
    assert_eq!(parsed, json!([{"name": "lm", "version": "1"}]));

    let (status, missing) = r.get("logged-models/m-0123", &[]).await?;
    assert_eq!(
        (status, missing["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST"))
    );
    let response = r
        .http
        .patch(r.url(&format!("/api/2.0/mlflow/logged-models/{model_id}")))
        .json(&json!({"status": "DONE"}))
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    Ok(())
}
