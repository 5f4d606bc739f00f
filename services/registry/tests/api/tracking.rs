//! Experiments, runs, params, metrics, tags, search and artifacts through the MLflow API.

use serde_json::{Value, json};

use crate::helpers::Registry;

on_both_backends!(
    experiments_follow_mlflow_rules,
    runs_log_and_read_back,
    params_are_immutable_and_batches_atomic,
    search_filters_orders_and_pages,
    metric_history_pages,
    artifacts_round_trip_and_refuse_traversal,
    bad_requests_get_mlflow_errors
);

async fn experiments_follow_mlflow_rules(r: &Registry) -> anyhow::Result<()> {
    let (status, default) = r.get("experiments/get", &[("experiment_id", "0")]).await?;
    assert_eq!(status, 200);
    assert_eq!(default["experiment"]["name"], "Default");
    assert_eq!(default["experiment"]["lifecycle_stage"], "active");

    let (status, missing) = r
        .get("experiments/get-by-name", &[("experiment_name", "churn")])
        .await?;
    assert_eq!(
        (status, missing["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST"))
    );

    let created = r
        .ok(
            "experiments/create",
            json!({"name": "churn", "tags": [{"key": "team", "value": "growth"}]}),
        )
        .await?;
    let id = created["experiment_id"]
        .as_str()
        .expect("experiment_id is a string")
        .to_owned();
    let (status, dup) = r
        .post("experiments/create", json!({"name": "churn"}))
        .await?;
    assert_eq!(
        (status, dup["error_code"].as_str()),
        (400, Some("RESOURCE_ALREADY_EXISTS"))
    );

    let (_, by_name) = r
        .get("experiments/get-by-name", &[("experiment_name", "churn")])
        .await?;
    let experiment = &by_name["experiment"];
    assert_eq!(experiment["experiment_id"], id.as_str());
    assert_eq!(
        experiment["artifact_location"],
        format!("mlflow-artifacts:/{id}")
    );
    assert_eq!(
        experiment["tags"],
        json!([{"key": "team", "value": "growth"}])
    );

    r.ok("experiments/delete", json!({"experiment_id": id}))
        .await?;
    let (_, deleted) = r
        .get("experiments/get", &[("experiment_id", id.as_str())])
        .await?;
    assert_eq!(deleted["experiment"]["lifecycle_stage"], "deleted");
    let listed = r
        .ok(
            "experiments/search",
            json!({"max_results": 1000, "view_type": "ACTIVE_ONLY"}),
        )
        .await?;
    let names: Vec<&str> = listed["experiments"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, ["Default"]);
    let (status, _) = r
        .post("experiments/create", json!({"name": "churn"}))
        .await?;
    assert_eq!(status, 400, "a deleted experiment's name stays taken");
    Ok(())
}

async fn new_run(r: &Registry, experiment: &str, name: &str) -> anyhow::Result<String> {
    new_run_at(r, experiment, name, 1_700_000_000_000).await
}

async fn new_run_at(
    r: &Registry,
    experiment: &str,
    name: &str,
    start_time: i64,
) -> anyhow::Result<String> {
    let reply = r
        .ok(
            "runs/create",
            json!({"experiment_id": experiment, "user_id": "alice", "run_name": name, "start_time": start_time,
                   "tags": [{"key": "mlflow.source.git.commit", "value": "abc123"}]}),
        )
        .await?;
    Ok(reply["run"]["info"]["run_id"]
        .as_str()
        .expect("run_id")
        .to_owned())
}

fn metric<'a>(run: &'a Value, key: &str) -> Option<&'a Value> {
    run["run"]["data"]["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["key"] == key)
}

async fn runs_log_and_read_back(r: &Registry) -> anyhow::Result<()> {
    let run_id = new_run(r, "0", "baseline").await?;
    assert!(
        run_id.len() == 32 && run_id.chars().all(|c| c.is_ascii_hexdigit()),
        "{run_id}"
    );
    r.ok(
        "runs/log-parameter",
        json!({"run_id": run_id, "run_uuid": run_id, "key": "lr", "value": "0.01"}),
    )
    .await?;
    // MLflow keeps as latest the greatest (step, timestamp, value), not the last written.
    r.ok(
        "runs/log-metric",
        json!({"run_id": run_id, "key": "loss", "value": 0.9, "timestamp": 2000, "step": 2}),
    )
    .await?;
    r.ok(
        "runs/log-metric",
        json!({"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 3000, "step": 1}),
    )
    .await?;
    r.ok(
        "runs/log-metric",
        json!({"run_id": run_id, "key": "weird", "value": "NaN", "timestamp": "1000", "step": 0}),
    )
    .await?;
    r.ok(
        "runs/log-metric",
        json!({"run_id": run_id, "key": "big", "value": "Infinity", "timestamp": 1000}),
    )
    .await?;
    r.ok(
        "runs/set-tag",
        json!({"run_id": run_id, "key": "stage", "value": "dev"}),
    )
    .await?;
    r.ok(
        "runs/set-tag",
        json!({"run_id": run_id, "key": "stage", "value": "prod"}),
    )
    .await?;
    let updated = r
        .ok(
            "runs/update",
            json!({"run_uuid": run_id, "status": "FINISHED", "end_time": 1_700_000_100_000i64}),
        )
        .await?;
    assert_eq!(updated["run_info"]["status"], "FINISHED");

    let (status, run) = r
        .get(
            "runs/get",
            &[("run_id", run_id.as_str()), ("run_uuid", run_id.as_str())],
        )
        .await?;
    assert_eq!(status, 200);
    let info = &run["run"]["info"];
    assert_eq!(info["run_name"], "baseline");
    assert_eq!(info["experiment_id"], "0");
    assert_eq!(info["status"], "FINISHED");
    assert_eq!(info["lifecycle_stage"], "active");
    assert_eq!(info["end_time"], 1_700_000_100_000i64);
    assert_eq!(
        info["artifact_uri"],
        format!("mlflow-artifacts:/0/{run_id}/artifacts")
    );
    let loss = metric(&run, "loss").expect("loss");
    assert_eq!(
        (loss["value"].as_f64(), loss["step"].as_i64()),
        (Some(0.9), Some(2))
    );
    assert_eq!(metric(&run, "weird").expect("weird")["value"], "NaN");
    assert_eq!(
        metric(&run, "big").expect("big")["value"].as_f64(),
        Some(f64::MAX),
        "infinity clamps like MLflow"
    );
    let tags = run["run"]["data"]["tags"].as_array().expect("tags");
    let tag = |k: &str| {
        tags.iter()
            .find(|t| t["key"] == k)
            .map(|t| t["value"].clone())
    };
    assert_eq!(tag("stage"), Some(json!("prod")));
    assert_eq!(tag("mlflow.runName"), Some(json!("baseline")));
    assert_eq!(tag("mlflow.source.git.commit"), Some(json!("abc123")));
    assert_eq!(
        run["run"]["data"]["params"],
        json!([{"key": "lr", "value": "0.01"}])
    );

    let (status, missing) = r
        .get(
            "runs/get",
            &[("run_id", "0123456789abcdef0123456789abcdef")],
        )
        .await?;
    assert_eq!(
        (status, missing["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST"))
    );
    Ok(())
}

async fn params_are_immutable_and_batches_atomic(r: &Registry) -> anyhow::Result<()> {
    let run_id = new_run(r, "0", "strict").await?;
    r.ok(
        "runs/log-batch",
        json!({"run_id": run_id, "params": [{"key": "depth", "value": "3"}]}),
    )
    .await?;
    r.ok(
        "runs/log-parameter",
        json!({"run_id": run_id, "key": "depth", "value": "3"}),
    )
    .await?;
    let (status, err) = r
        .post(
            "runs/log-parameter",
            json!({"run_id": run_id, "key": "depth", "value": "4"}),
        )
        .await?;
    assert_eq!(
        (status, err["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE"))
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Changing param values is not allowed")
    );

    // A batch with one bad param writes none of its metrics or tags.
    let (status, _) = r
        .post(
            "runs/log-batch",
            json!({"run_id": run_id, "metrics": [{"key": "acc", "value": 0.9, "timestamp": 1, "step": 0}],
                   "params": [{"key": "depth", "value": "5"}], "tags": [{"key": "t", "value": "v"}]}),
        )
        .await?;
    assert_eq!(status, 400);
    let (_, run) = r.get("runs/get", &[("run_id", run_id.as_str())]).await?;
    assert!(metric(&run, "acc").is_none(), "half a batch was written");
    assert!(
        !run["run"]["data"]["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .any(|t| t["key"] == "t")
    );
    Ok(())
}

async fn search_filters_orders_and_pages(r: &Registry) -> anyhow::Result<()> {
    let experiment = r
        .ok("experiments/create", json!({"name": "search"}))
        .await?["experiment_id"]
        .as_str()
        .expect("id")
        .to_owned();
    for i in 0..12 {
        let run_id = new_run_at(
            r,
            &experiment,
            &format!("run-{i:02}"),
            1_700_000_000_000 + i64::from(i) * 1000,
        )
        .await?;
        r.ok(
            "runs/log-batch",
            json!({"run_id": run_id,
                   "metrics": [{"key": "rmse", "value": 1.0 - f64::from(i) * 0.05, "timestamp": 1, "step": 0}],
                   "params": [{"key": "model", "value": if i % 2 == 0 { "tree" } else { "linear" }}],
                   "tags": [{"key": "team", "value": if i < 6 { "a" } else { "b" }}]}),
        )
        .await?;
        if i % 3 == 0 {
            r.ok(
                "runs/update",
                json!({"run_id": run_id, "status": "FINISHED", "end_time": 5}),
            )
            .await?;
        }
    }
    let names = |reply: &Value| -> Vec<String> {
        reply["runs"]
            .as_array()
            .map(|runs| {
                runs.iter()
                    .map(|run| {
                        run["info"]["run_name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let search = |filter: &str, order: Vec<&str>, max: i64, token: Option<&str>| {
        let mut body = json!({"experiment_ids": [experiment], "filter": filter, "run_view_type": "ACTIVE_ONLY", "max_results": max, "order_by": order});
        if let Some(token) = token {
            body["page_token"] = json!(token);
        }
        r.ok("runs/search", body)
    };

    let reply = search(
        "metrics.rmse < 0.6 and params.model = 'tree'",
        vec!["metrics.rmse ASC"],
        100,
        None,
    )
    .await?;
    assert_eq!(names(&reply), ["run-10"]);
    let reply = search(
        "tags.team = 'b' and attributes.status = 'FINISHED'",
        vec![],
        100,
        None,
    )
    .await?;
    assert_eq!(
        names(&reply),
        ["run-09", "run-06"],
        "newest first by default"
    );
    let reply = search(
        "params.model LIKE 'lin%' and metrics.rmse >= 0.75",
        vec!["metrics.rmse DESC"],
        100,
        None,
    )
    .await?;
    assert_eq!(names(&reply), ["run-01", "run-03", "run-05"]);
    let reply = search(
        "tags.missing IS NULL and attributes.run_name IN ('run-00', 'run-11')",
        vec!["attributes.run_name ASC"],
        100,
        None,
    )
    .await?;
    assert_eq!(names(&reply), ["run-00", "run-11"]);

    // Pages of 5 cover all 12 exactly once, and the last page carries no token.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for page in 0.. {
        let reply = search("", vec!["metrics.rmse ASC"], 5, token.as_deref()).await?;
        seen.extend(names(&reply));
        token = reply
            .get("next_page_token")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if token.is_none() {
            assert_eq!(page, 2);
            break;
        }
    }
    let expected: Vec<String> = (0..12).rev().map(|i| format!("run-{i:02}")).collect();
    assert_eq!(seen, expected);

    let (status, err) = r
        .post(
            "runs/search",
            json!({"experiment_ids": [experiment], "filter": "metrics.rmse LIKE 'x'"}),
        )
        .await?;
    assert_eq!(
        (status, err["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE"))
    );
    Ok(())
}

async fn metric_history_pages(r: &Registry) -> anyhow::Result<()> {
    let run_id = new_run(r, "0", "history").await?;
    let metrics: Vec<Value> = (0..250).map(|step| json!({"key": "loss", "value": 1.0 / f64::from(step + 1), "timestamp": 1000 + step, "step": step})).collect();
    r.ok(
        "runs/log-batch",
        json!({"run_id": run_id, "metrics": metrics}),
    )
    .await?;
    let mut steps = Vec::new();
    let mut token = String::new();
    loop {
        let mut query = vec![
            ("run_id", run_id.as_str()),
            ("metric_key", "loss"),
            ("max_results", "100"),
        ];
        if !token.is_empty() {
            query.push(("page_token", token.as_str()));
        }
        let (status, reply) = r.get("metrics/get-history", &query).await?;
        assert_eq!(status, 200);
        steps.extend(
            reply["metrics"]
                .as_array()
                .expect("metrics")
                .iter()
                .filter_map(|m| m["step"].as_i64()),
        );
        match reply.get("next_page_token").and_then(Value::as_str) {
            Some(next) => token = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(steps, (0..250).collect::<Vec<i64>>());
    let (_, none) = r
        .get(
            "metrics/get-history",
            &[("run_id", run_id.as_str()), ("metric_key", "nope")],
        )
        .await?;
    assert_eq!(none["metrics"], json!([]));
    Ok(())
}

async fn artifacts_round_trip_and_refuse_traversal(r: &Registry) -> anyhow::Result<()> {
    let base = r.url("/api/2.0/mlflow-artifacts/artifacts");
    let put = r
        .http
        .put(format!("{base}/0/run1/artifacts/model/MLmodel"))
        .body("flavors: {}\n")
        .send()
        .await?;
    assert_eq!(put.status(), 200);
    r.http
        .put(format!("{base}/0/run1/artifacts/metrics.json"))
        .body("{\"a\": 1}")
        .send()
        .await?
        .error_for_status()?;
    let got = r
        .http
        .get(format!("{base}/0/run1/artifacts/model/MLmodel"))
        .send()
        .await?;
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await?, "flavors: {}\n");
    let listing: Value = r
        .http
        .get(&base)
        .query(&[("path", "0/run1/artifacts")])
        .send()
        .await?
        .json()
        .await?;
    let mut entries: Vec<(String, bool)> = listing["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap_or_default().to_owned(),
                f["is_dir"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            ("metrics.json".to_owned(), false),
            ("model".to_owned(), true)
        ]
    );
    let empty: Value = r
        .http
        .get(&base)
        .query(&[("path", "0/nothing/here")])
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        empty["files"],
        json!([]),
        "a missing folder lists empty, not 404"
    );
    let missing = r
        .http
        .get(format!("{base}/0/run1/artifacts/nope.txt"))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    let escape = r
        .http
        .put(format!("{base}/0/..%2F..%2Fescape"))
        .body("x")
        .send()
        .await?;
    assert_eq!(escape.status(), 400, "traversal refused");
    Ok(())
}

async fn bad_requests_get_mlflow_errors(r: &Registry) -> anyhow::Result<()> {
    let response = r
        .http
        .post(r.url("/api/2.0/mlflow/runs/create"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await?;
    assert_eq!(body["error_code"], "BAD_REQUEST");
    let (status, body) = r
        .post("runs/create", json!({"experiment_id": "banana"}))
        .await?;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE"))
    );
    let (status, body) = r
        .post("runs/create", json!({"experiment_id": "424242"}))
        .await?;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST"))
    );
    let run_id = new_run(r, "0", "keys").await?;
    let (status, _) = r
        .post(
            "runs/log-parameter",
            json!({"run_id": run_id, "key": "../etc", "value": "x"}),
        )
        .await?;
    assert_eq!(status, 400);
    let (status, _) = r
        .post(
            "runs/update",
            json!({"run_id": run_id, "status": "EXPLODED"}),
        )
        .await?;
    assert_eq!(status, 400);
    let (status, _) = r
        .post(
            "runs/log-metric",
            json!({"run_id": run_id, "key": "m", "value": "lots"}),
        )
        .await?;
    assert_eq!(status, 400);
    Ok(())
}
