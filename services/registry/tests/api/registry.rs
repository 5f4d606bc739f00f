//! Registered models, versions, aliases and stages through the MLflow API; the events they
//! announce on the bus; the audit log.

use std::time::Duration;

use flywheel_bus::{Bus, StreamKind};
use flywheel_events::Event;
use serde_json::{Value, json};

use crate::helpers::Registry;

on_both_backends!(
    models_versions_and_aliases,
    version_search_and_stages,
    registry_events_and_audit_log,
    registry_bad_input
);

async fn new_run(r: &Registry) -> anyhow::Result<String> {
    let reply = r
        .ok(
            "runs/create",
            json!({"experiment_id": "0", "run_name": "train"}),
        )
        .await?;
    let run_id = reply["run"]["info"]["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    r.ok("runs/log-batch", json!({"run_id": run_id, "metrics": [{"key": "accuracy", "value": 0.91, "timestamp": 1, "step": 0}],
        "params": [{"key": "depth", "value": "4"}], "tags": [{"key": "mlflow.source.git.commit", "value": "c0ffee"}, {"key": "flywheel.dataset", "value": "customers@0123456789abcdef"}]})).await?;
    Ok(run_id)
}

async fn models_versions_and_aliases(r: &Registry) -> anyhow::Result<()> {
    let created = r.ok("registered-models/create", json!({"name": "churn", "tags": [{"key": "team", "value": "growth"}], "description": "who leaves"})).await?;
    assert_eq!(created["registered_model"]["name"], "churn");
    let (status, dup) = r
        .post("registered-models/create", json!({"name": "churn"}))
        .await?;
    assert_eq!(
        (status, dup["error_code"].as_str()),
        (400, Some("RESOURCE_ALREADY_EXISTS"))
    );

    let run_id = new_run(r).await?;
    let v1 = r
        .ok(
            "model-versions/create",
            json!({"name": "churn", "source": format!("runs:/{run_id}/model"), "run_id": run_id}),
        )
        .await?;
    assert_eq!(v1["model_version"]["version"], "1");
    assert_eq!(v1["model_version"]["status"], "READY");
    assert_eq!(v1["model_version"]["current_stage"], "None");
    let v2 = r
        .ok(
            "model-versions/create",
            json!({"name": "churn", "source": "s3://bucket/churn/2"}),
        )
        .await?;
    assert_eq!(v2["model_version"]["version"], "2");

    r.ok(
        "registered-models/alias",
        json!({"name": "churn", "alias": "champion", "version": "1"}),
    )
    .await?;
    let (_, by_alias) = r
        .get(
            "registered-models/alias",
            &[("name", "churn"), ("alias", "champion")],
        )
        .await?;
    assert_eq!(by_alias["model_version"]["version"], "1");
    assert_eq!(by_alias["model_version"]["aliases"], json!(["champion"]));
    r.ok(
        "registered-models/alias",
        json!({"name": "churn", "alias": "champion", "version": "2"}),
    )
    .await?;
    let (_, model) = r.get("registered-models/get", &[("name", "churn")]).await?;
    assert_eq!(
        model["registered_model"]["aliases"],
        json!([{"alias": "champion", "version": "2"}])
    );
    assert_eq!(
        model["registered_model"]["tags"],
        json!([{"key": "team", "value": "growth"}])
    );

    let response = r
        .http
        .delete(r.url("/api/2.0/mlflow/registered-models/alias"))
        .json(&json!({"name": "churn", "alias": "champion"}))
        .send()
        .await?;
    assert_eq!(response.status(), 200, "DELETE with a JSON body");
    let (status, missing) = r
        .get(
            "registered-models/alias",
            &[("name", "churn"), ("alias", "champion")],
        )
        .await?;
    assert_eq!(
        (status, missing["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE"))
    );

    let (_, uri) = r
        .get(
            "model-versions/get-download-uri",
            &[("name", "churn"), ("version", "1")],
        )
        .await?;
    assert_eq!(uri["artifact_uri"], format!("runs:/{run_id}/model"));

    // The prompt clause the client always appends: models without the tag match.
    r.ok(
        "registered-models/create",
        json!({"name": "prompt-x", "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"}]}),
    )
    .await?;
    let (status, found) = r
        .get(
            "registered-models/search",
            &[
                (
                    "filter",
                    "name LIKE '%' AND tag.`mlflow.prompt.is_prompt` != 'true'",
                ),
                ("max_results", "100"),
            ],
        )
        .await?;
    assert_eq!(status, 200, "{found}");
    let names: Vec<&str> = found["registered_models"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["churn"]);

    let response = r
        .http
        .delete(r.url("/api/2.0/mlflow/registered-models/delete"))
        .json(&json!({"name": "churn"}))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let (status, _) = r.get("registered-models/get", &[("name", "churn")]).await?;
    assert_eq!(status, 404);
    Ok(())
}

async fn version_search_and_stages(r: &Registry) -> anyhow::Result<()> {
    r.ok("registered-models/create", json!({"name": "fraud"}))
        .await?;
    r.ok("registered-models/create", json!({"name": "other"}))
        .await?;
    for i in 1..=3 {
        r.ok("model-versions/create", json!({"name": "fraud", "source": format!("s3://b/fraud/{i}"), "tags": [{"key": "i", "value": i.to_string()}]})).await?;
    }
    r.ok(
        "model-versions/create",
        json!({"name": "other", "source": "s3://b/other/1"}),
    )
    .await?;
    let (status, found) = r
        .get(
            "model-versions/search",
            &[
                ("filter", "name = 'fraud' and version_number >= 2"),
                ("order_by", "version_number ASC"),
            ],
        )
        .await?;
    assert_eq!(status, 200, "{found}");
    let versions: Vec<&str> = found["model_versions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|v| v["version"].as_str())
        .collect();
    assert_eq!(versions, ["2", "3"]);
    let (_, tagged) = r
        .get("model-versions/search", &[("filter", "tags.i = '1'")])
        .await?;
    assert_eq!(tagged["model_versions"].as_array().map(Vec::len), Some(1));

    r.ok("model-versions/transition-stage", json!({"name": "fraud", "version": "1", "stage": "production", "archive_existing_versions": false})).await?;
    let moved = r.ok("model-versions/transition-stage", json!({"name": "fraud", "version": "2", "stage": "Production", "archive_existing_versions": true})).await?;
    assert_eq!(moved["model_version"]["current_stage"], "Production");
    let (_, v1) = r
        .get("model-versions/get", &[("name", "fraud"), ("version", "1")])
        .await?;
    assert_eq!(
        v1["model_version"]["current_stage"], "Archived",
        "archive_existing_versions archived v1"
    );
    let latest = r
        .ok(
            "registered-models/get-latest-versions",
            json!({"name": "fraud", "stages": ["Production"]}),
        )
        .await?;
    assert_eq!(
        latest["model_versions"].as_array().map(|v| v
            .iter()
            .filter_map(|x| x["version"].as_str())
            .collect::<Vec<_>>()),
        Some(vec!["2"])
    );
    Ok(())
}

async fn registry_events_and_audit_log(r: &Registry) -> anyhow::Result<()> {
    r.ok("registered-models/create", json!({"name": "ltv"}))
        .await?;
    let run_id = new_run(r).await?;
    r.ok(
        "model-versions/create",
        json!({"name": "ltv", "source": "s3://b/ltv/1", "run_id": run_id}),
    )
    .await?;
    r.ok(
        "registered-models/alias",
        json!({"name": "ltv", "alias": "production", "version": "1"}),
    )
    .await?;

    // The outbox publishes on the registry's prefix; read the EVENTS stream back.
    let bus = Bus::connect(&flywheel_testkit::bus_config(&r.prefix), "probe").await?;
    let mut stream = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Events))
        .await?;
    let mut events = Vec::new();
    for _ in 0..100 {
        let state = stream.info().await?.state.clone();
        if state.messages >= 2 {
            for seq in state.first_sequence..=state.last_sequence {
                let message = stream.get_raw_message(seq).await?;
                events.push(flywheel_events::decode_with_header(
                    &message.payload,
                    message.headers.get("Content-Type").map(|v| v.as_str()),
                )?);
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events.len(), 2, "one event per change");
    match &events[0].event {
        Event::ModelVersionRegistered(registered) => {
            assert_eq!((registered.model.as_str(), registered.version), ("ltv", 1));
            assert_eq!(
                registered.metrics.get("accuracy"),
                Some(&0.91),
                "the run's metrics travel with the version"
            );
            assert_eq!(registered.lineage.run_id.as_deref(), Some(run_id.as_str()));
            assert_eq!(registered.lineage.code_ref.as_deref(), Some("c0ffee"));
            assert_eq!(
                registered
                    .lineage
                    .dataset
                    .as_ref()
                    .map(|d| d.version.as_str()),
                Some("0123456789abcdef"),
                "the run's dataset tag"
            );
        }
        other => panic!("expected model.version.registered, got {other:?}"),
    }
    match &events[1].event {
        Event::ModelVersionAliasChanged(changed) => {
            assert_eq!(
                (
                    changed.alias.as_str(),
                    changed.version,
                    changed.previous_version
                ),
                ("production", Some(1), None)
            );
        }
        other => panic!("expected model.version.alias_changed, got {other:?}"),
    }

    let audit: Value = r
        .http
        .get(r.url("/api/v1/models/ltv/audit"))
        .send()
        .await?
        .json()
        .await?;
    let actions: Vec<&str> = audit
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["model.created", "version.registered", "alias.set"]
    );
    assert_eq!(
        audit[2]["after"],
        json!({"alias": "production", "version": 1})
    );
    let missing = r
        .http
        .get(r.url("/api/v1/models/nope/audit"))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await?;
    assert_eq!(body["code"], "not_found");
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}

async fn registry_bad_input(r: &Registry) -> anyhow::Result<()> {
    for bad in ["", "a/b", " padded", "../up"] {
        let (status, body) = r
            .post("registered-models/create", json!({"name": bad}))
            .await?;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (400, Some("INVALID_PARAMETER_VALUE")),
            "{bad:?}"
        );
    }
    r.ok("registered-models/create", json!({"name": "m"}))
        .await?;
    let (status, _) = r
        .post(
            "model-versions/create",
            json!({"name": "nope", "source": "s3://x"}),
        )
        .await?;
    assert_eq!(status, 404);
    let (status, _) = r
        .post("model-versions/create", json!({"name": "m", "source": ""}))
        .await?;
    assert_eq!(status, 400);
    r.ok(
        "model-versions/create",
        json!({"name": "m", "source": "s3://x"}),
    )
    .await?;
    for alias in ["latest", "v1", "1abc", "bad alias"] {
        let (status, _) = r
            .post(
                "registered-models/alias",
                json!({"name": "m", "alias": alias, "version": "1"}),
            )
            .await?;
        assert_eq!(status, 400, "{alias}");
    }
    let (status, _) = r
        .post(
            "registered-models/alias",
            json!({"name": "m", "alias": "ok", "version": "9"}),
        )
        .await?;
    assert_eq!(status, 404);
    let (status, _) = r
        .get("model-versions/get", &[("name", "m"), ("version", "one")])
        .await?;
    assert_eq!(status, 400);
    let (status, _) = r
        .post(
            "model-versions/transition-stage",
            json!({"name": "m", "version": "1", "stage": "Moon"}),
        )
        .await?;
    assert_eq!(status, 400);
    let (status, body) = r.post("no-such/endpoint", json!({})).await?;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("ENDPOINT_NOT_FOUND"))
    );
    Ok(())
}
