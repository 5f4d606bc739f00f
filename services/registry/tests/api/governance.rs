//! Policies, gates, promotions, approvals with four eyes, rejections, auto-promotion; the
//! events and audit entries each step leaves.

use serde_json::{Value, json};

use crate::helpers::Registry;

on_both_backends!(gates_and_four_eyes_approvals, rejection_and_auto_promotion);

/// Registers a version whose run logged `accuracy`.
async fn version_with_accuracy(r: &Registry, model: &str, accuracy: f64) -> anyhow::Result<String> {
    let run = r.ok("runs/create", json!({"experiment_id": "0"})).await?;
    let run_id = run["run"]["info"]["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    r.ok(
        "runs/log-metric",
        json!({"run_id": run_id, "key": "accuracy", "value": accuracy, "timestamp": 1, "step": 0}),
    )
    .await?;
    let version = r
        .ok(
            "model-versions/create",
            json!({"name": model, "source": format!("runs:/{run_id}/model"), "run_id": run_id}),
        )
        .await?;
    Ok(version["model_version"]["version"]
        .as_str()
        .expect("version")
        .to_owned())
}

async fn native(
    r: &Registry,
    method: reqwest::Method,
    path: &str,
    actor: &str,
    body: Value,
) -> anyhow::Result<(u16, Value)> {
    let response = r
        .http
        .request(method, r.url(path))
        .header("x-flywheel-actor", actor)
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

async fn gates_and_four_eyes_approvals(r: &Registry) -> anyhow::Result<()> {
    r.ok("registered-models/create", json!({"name": "churn"}))
        .await?;
    let policy = json!({"gates": [{"metric": "accuracy", "op": ">=", "threshold": 0.8}],
                        "no_regression": [{"metric": "accuracy", "higher_is_better": true, "tolerance": 0.01}],
                        "approvals_required": 2, "four_eyes": true});
    let (status, _) = native(
        r,
        reqwest::Method::PUT,
        "/api/v1/models/churn/policy",
        "admin",
        policy,
    )
    .await?;
    assert_eq!(status, 200);
    let (status, bad) = native(
        r,
        reqwest::Method::PUT,
        "/api/v1/models/churn/policy",
        "admin",
        json!({"gates": [{"metric": "a", "op": "~", "threshold": 1}]}),
    )
    .await?;
    assert_eq!((status, bad["code"].as_str()), (400, Some("bad_request")));

    let v1 = version_with_accuracy(r, "churn", 0.90).await?;
    let (status, promotion) = native(
        r,
        reqwest::Method::POST,
        &format!("/api/v1/models/churn/versions/{v1}/promotions"),
        "alice",
        json!({"alias": "production"}),
    )
    .await?;
    assert_eq!(status, 200, "{promotion}");
    assert_eq!(promotion["status"], "pending");
    assert_eq!(promotion["gates"][0]["passed"], true);
    let id = promotion["id"].as_i64().expect("id");

    // The requester cannot approve under four eyes; nor can the alias be moved directly.
    let (status, denied) = native(
        r,
        reqwest::Method::POST,
        &format!("/api/v1/promotions/{id}/approve"),
        "alice",
        json!({}),
    )
    .await?;
    assert_eq!((status, denied["code"].as_str()), (403, Some("forbidden")));
    let (status, body) = r
        .post(
            "registered-models/alias",
            json!({"name": "churn", "alias": "production", "version": v1}),
        )
        .await?;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );

    let (_, after_one) = native(
        r,
        reqwest::Method::POST,
        &format!("/api/v1/promotions/{id}/approve"),
        "bob",
        json!({"comment": "looks good"}),
    )
    .await?;
    assert_eq!(after_one["status"], "pending", "one of two approvals");
    let (status, _) = native(
        r,
        reqwest::Method::POST,
        &format!("/api/v1/promotions/{id}/approve"),
        "bob",
        json!({}),
    )
    .await?;
    assert_eq!(status, 409, "one vote per approver");
    let (_, applied) = native(
        r,
        reqwest::Method::POST,
        &format!("/api/v1/promotions/{id}/approve"),
        "carol",
        json!({}),
    )
    .await?;
    assert_eq!(applied["status"], "applied");
    let (_, by_alias) = r
        .get(
            "registered-models/alias",
            &[("name", "churn"), ("alias", "production")],
        )
        .await?;
    assert_eq!(by_alias["model_version"]["version"], v1.as_str());

    // A version that fails a gate (absolute, or regression against production) cannot be promoted.
    let v2 = version_with_accuracy(r, "churn", 0.70).await?;
    let (status, refused) = native(
        r,
        reqwest::Method::POST,
        &format!("/api/v1/models/churn/versions/{v2}/promotions"),
        "alice",
        json!({"alias": "production"}),
    )
    .await?;
    assert_eq!(
        (status, refused["code"].as_str()),
        (422, Some("unprocessable"))
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("accuracy = 0.7 fails >= 0.8"),
        "{refused}"
    );
    let v3 = version_with_accuracy(r, "churn", 0.85).await?;
    let (status, regressed) = native(
        r,
        reqwest::Method::POST,
        &format!("/api/v1/models/churn/versions/{v3}/promotions"),
        "alice",
        json!({"alias": "production"}),
    )
    .await?;
    assert_eq!(
        status, 422,
        "0.85 regresses more than 0.01 below production's 0.90: {regressed}"
    );
    assert!(
        regressed["message"]
            .as_str()
            .unwrap_or_default()
            .contains("production v1"),
        "{regressed}"
    );

    let audit: Value = r
        .http
        .get(r.url("/api/v1/models/churn/audit"))
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
    for step in [
        "policy.set",
        "version.registered",
        "version.gates_evaluated",
        "promotion.requested",
        "promotion.denied",
        "promotion.approved",
        "alias.set",
    ] {
        assert!(
            actions.contains(&step),
            "audit log lacks {step}: {actions:?}"
        );
    }
    let approvals = audit
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "promotion.approved")
        .count();
    assert_eq!(approvals, 2);
    Ok(())
}

async fn rejection_and_auto_promotion(r: &Registry) -> anyhow::Result<()> {
    r.ok("registered-models/create", json!({"name": "fraud"}))
        .await?;
    let policy = json!({"gates": [{"metric": "accuracy", "op": ">", "threshold": 0.5}], "approvals_required": 1, "auto_promote_to": "staging"});
    native(
        r,
        reqwest::Method::PUT,
        "/api/v1/models/fraud/policy",
        "admin",
        policy,
    )
    .await?;
    let good = version_with_accuracy(r, "fraud", 0.9).await?;
    let (_, staging) = r
        .get(
            "registered-models/alias",
            &[("name", "fraud"), ("alias", "staging")],
        )
        .await?;
    assert_eq!(
        staging["model_version"]["version"],
        good.as_str(),
        "a passing version is auto-promoted to staging"
    );
    let bad = version_with_accuracy(r, "fraud", 0.4).await?;
    let (_, staging) = r
        .get(
            "registered-models/alias",
            &[("name", "fraud"), ("alias", "staging")],
        )
        .await?;
    assert_eq!(
        staging["model_version"]["version"],
        good.as_str(),
        "failing version {bad} is not auto-promoted"
    );

    let (_, promotion) = native(
        r,
        reqwest::Method::POST,
        &format!("/api/v1/models/fraud/versions/{good}/promotions"),
        "alice",
        json!({"alias": "production"}),
    )
    .await?;
    let id = promotion["id"].as_i64().expect("id");
    let (_, rejected) = native(
        r,
        reqwest::Method::POST,
        &format!("/api/v1/promotions/{id}/reject"),
        "bob",
        json!({"comment": "needs a fairness review"}),
    )
    .await?;
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(
        rejected["decisions"][0]["comment"],
        "needs a fairness review"
    );
    let (status, _) = native(
        r,
        reqwest::Method::POST,
        &format!("/api/v1/promotions/{id}/approve"),
        "carol",
        json!({}),
    )
    .await?;
    assert_eq!(status, 409, "a rejected promotion stays rejected");
    let (status, _) = r
        .get(
            "registered-models/alias",
            &[("name", "fraud"), ("alias", "production")],
        )
        .await?;
    assert_eq!(status, 400, "production never moved");
    let (status, _) = native(
        r,
        reqwest::Method::GET,
        "/api/v1/promotions/999999",
        "x",
        json!(null),
    )
    .await?;
    assert_eq!(status, 404);
    Ok(())
}
