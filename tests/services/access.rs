//! Authentication and roles across services: the registry and the deployer with
//! `auth.enabled`, sharing one NATS prefix (so one token store): 401 without or with a bad,
//! revoked or expired token; 403 for a role too low or another project; four eyes by token
//! holder; the dashboard's session cookie and CSRF; public inference per deployment; every
//! refusal in the registry's denial log.

use std::time::Duration;

use anyhow::Context;
use flywheel_runtime::ServiceSettings;
use flywheel_testkit::service::InProcess;
use reqwest::Method;
use serde_json::{Value, json};

pub(super) const BOOTSTRAP: &str = "bootstrap-admin-token-for-the-access-test-0123456789";

pub(super) async fn settings(service: &str, prefix: &str) -> anyhow::Result<ServiceSettings> {
    let mut settings = ServiceSettings::defaults_for(service, 0);
    settings.bus = flywheel_testkit::bus_config(prefix);
    settings.db = flywheel_testkit::fresh_postgres().await?;
    settings.artifacts = flywheel_testkit::s3_config(prefix)?;
    settings.auth.enabled = true;
    settings.auth.bootstrap_admin_token = Some(BOOTSTRAP.into());
    Ok(settings)
}

/// One request with an optional bearer token: status and JSON body.
pub(super) async fn call(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Creates a token as the bootstrap admin; the token string.
pub(super) async fn token(registry: &InProcess, new: Value) -> anyhow::Result<String> {
    let (status, issued) = call(
        Method::POST,
        &registry.url("/api/v1/tokens"),
        Some(BOOTSTRAP),
        Some(new),
    )
    .await?;
    anyhow::ensure!(status == 201, "token not created: {status} {issued}");
    Ok(issued["token"].as_str().context("token")?.to_owned())
}

#[tokio::test]
async fn tokens_roles_sessions_and_denials_across_services() -> anyhow::Result<()> {
    let prefix = flywheel_testkit::unique_name();
    let registry =
        InProcess::start(settings("registry", &prefix).await?, flywheel_registry::run).await?;
    let deployer =
        InProcess::start(settings("deployer", &prefix).await?, flywheel_deployer::run).await?;
    let datasets = registry.url("/api/v1/datasets");

    // No token, a malformed one, an unknown one: 401 with a message.
    let (status, body) = call(Method::GET, &datasets, None, None).await?;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("Bearer"))
    );
    let (status, _) = call(Method::GET, &datasets, Some("nonsense"), None).await?;
    assert_eq!(status, 401);
    let unknown = format!("fwt_{}_{}", "0".repeat(16), "0".repeat(64));
    let (status, body) = call(Method::GET, &datasets, Some(&unknown), None).await?;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("unknown token"))
    );
    // Health stays open.
    assert_eq!(
        call(Method::GET, &registry.url("/healthz"), None, None)
            .await?
            .0,
        200
    );

    let viewer = token(
        &registry,
        json!({"name": "vera", "project": "default", "role": "viewer"}),
    )
    .await?;
    let operator = token(
        &registry,
        json!({"name": "otto", "project": "default", "role": "operator"}),
    )
    .await?;
    let ana = token(
        &registry,
        json!({"name": "ana", "project": "default", "role": "approver"}),
    )
    .await?;
    let bob = token(
        &registry,
        json!({"name": "bob", "project": "default", "role": "approver"}),
    )
    .await?;
    let elsewhere = token(
        &registry,
        json!({"name": "eve", "project": "fraud", "role": "admin"}),
    )
    .await?;

    // Roles: a viewer reads but does not write; an operator writes; neither manages tokens.
    assert_eq!(
        call(Method::GET, &datasets, Some(&viewer), None).await?.0,
        200
    );
    let suite = registry.url("/api/v1/datasets/customers/suite");
    let (status, body) = call(Method::PUT, &suite, Some(&viewer), Some(json!([]))).await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("operator")),
        "{body}"
    );
    let (status, body) = call(Method::PUT, &suite, Some(&operator), Some(json!([]))).await?;
    assert!(status < 300, "operator may set a suite: {status} {body}");
    for who in [&viewer, &operator, &ana] {
        let (status, _) = call(
            Method::GET,
            &registry.url("/api/v1/tokens"),
            Some(who),
            None,
        )
        .await?;
        assert_eq!(status, 403);
    }
    // Another project's token (even its admin) sees nothing of this one (more in
    // tests/services/projects.rs; the deployer's part below).
    let (status, listed) = call(Method::GET, &datasets, Some(&elsewhere), None).await?;
    assert_eq!((status, listed), (200, json!([])));
    let (status, listed) = call(
        Method::GET,
        &registry.url("/api/v1/tokens"),
        Some(&elsewhere),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{listed}");
    let names: Vec<&str> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["eve"],
        "a project's admin lists its project's tokens only"
    );
    // The admin's listing holds no secret.
    let (status, listed) = call(
        Method::GET,
        &registry.url("/api/v1/tokens"),
        Some(BOOTSTRAP),
        None,
    )
    .await?;
    assert_eq!(status, 200);
    let text = listed.to_string();
    assert_eq!(listed.as_array().map(Vec::len), Some(5), "{listed}");
    for secret in [&viewer, &operator, &ana, &bob, &elsewhere] {
        let tail = secret.rsplit('_').next().unwrap_or_default();
        assert!(!text.contains(tail), "a secret is listed");
    }

    // Four eyes, by token holder: the requester cannot approve, another approver can. The
    // actor header is ignored once a token says who is acting.
    let mlflow = |path: &str| registry.url(&format!("/api/2.0/mlflow/{path}"));
    let (status, _) = call(
        Method::POST,
        &mlflow("registered-models/create"),
        Some(&operator),
        Some(json!({"name": "churn"})),
    )
    .await?;
    assert_eq!(status, 200);
    let (status, _) = call(
        Method::POST,
        &mlflow("model-versions/create"),
        Some(&operator),
        Some(json!({"name": "churn", "source": "s3://x/model"})),
    )
    .await?;
    assert_eq!(status, 200);
    let policy = json!({"approvals_required": 1, "four_eyes": true});
    let policy_url = registry.url("/api/v1/models/churn/policy");
    assert_eq!(
        call(
            Method::PUT,
            &policy_url,
            Some(&operator),
            Some(policy.clone())
        )
        .await?
        .0,
        403
    );
    assert_eq!(
        call(Method::PUT, &policy_url, Some(BOOTSTRAP), Some(policy))
            .await?
            .0,
        200
    );
    let (status, promotion) = reqwest::Client::new()
        .post(registry.url("/api/v1/models/churn/versions/1/promotions"))
        .bearer_auth(&ana)
        .header("x-flywheel-actor", "somebody-else")
        .json(&json!({"alias": "production"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))?;
    assert_eq!(status, 200);
    let promotion: Value = promotion.json().await?;
    assert_eq!(promotion["requested_by"], "ana", "{promotion}");
    let id = promotion["id"].as_i64().context("promotion id")?;
    let approve = registry.url(&format!("/api/v1/promotions/{id}/approve"));
    assert_eq!(
        call(Method::POST, &approve, Some(&operator), Some(json!({})))
            .await?
            .0,
        403,
        "operators do not approve"
    );
    let (status, body) = call(Method::POST, &approve, Some(&ana), Some(json!({}))).await?;
    assert_eq!(status, 403, "four eyes: {body}");
    let (status, body) = call(Method::POST, &approve, Some(&bob), Some(json!({}))).await?;
    assert_eq!(status, 200, "{body}");
    let (_, audit) = call(
        Method::GET,
        &registry.url("/api/v1/models/churn/audit"),
        Some(&viewer),
        None,
    )
    .await?;
    let denied = audit
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| a["action"] == "promotion.denied" && a["actor"] == "ana");
    assert!(denied, "the refused approval is audited: {audit}");

    // The dashboard's session: an HTTP-only cookie, and unsafe requests need the CSRF token.
    let session = reqwest::Client::new()
        .post(registry.url("/api/v1/session"))
        .json(&json!({"token": operator}))
        .send()
        .await?;
    assert_eq!(session.status(), 200);
    let cookie = session
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .context("set-cookie")?
        .to_owned();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Secure"),
        "{cookie}"
    );
    let signed_in: Value = session.json().await?;
    assert_eq!(signed_in["name"], "otto");
    let csrf = signed_in["csrf_token"].as_str().context("csrf")?.to_owned();
    let pair = cookie.split(';').next().unwrap_or_default().to_owned();
    let with_cookie = |method: Method, csrf: Option<&str>| {
        let mut request = reqwest::Client::new()
            .request(method, &suite)
            .header(reqwest::header::COOKIE, &pair)
            .json(&json!([]));
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send()
    };
    assert_eq!(
        with_cookie(Method::GET, None).await?.status(),
        200,
        "reads need no CSRF token"
    );
    assert_eq!(
        with_cookie(Method::PUT, None).await?.status(),
        403,
        "changes without CSRF"
    );
    assert_eq!(
        with_cookie(Method::PUT, Some("forged")).await?.status(),
        403
    );
    assert!(
        with_cookie(Method::PUT, Some(&csrf))
            .await?
            .status()
            .is_success()
    );
    let (status, whoami) = call(
        Method::GET,
        &registry.url("/api/v1/session"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!((status, whoami["role"].as_str()), (200, Some("viewer")));

    // The deployer reads the same tokens: inference needs one unless the deployment is public.
    let infer = |name: &str| deployer.url(&format!("/v2/models/{name}/infer"));
    let v2_body = json!({"inputs": []});
    let (status, _) = call(Method::POST, &infer("closed"), None, Some(v2_body.clone())).await?;
    assert_eq!(status, 401);
    let (status, _) = call(
        Method::POST,
        &infer("closed"),
        Some(&viewer),
        Some(v2_body.clone()),
    )
    .await?;
    assert_eq!(status, 404, "past the gate: no such model");
    let create = async |name: &str, public: bool| {
        let url = deployer.url(&format!("/api/v1/deployments/{name}"));
        let spec = json!({"model": "churn", "version": 1, "public_inference": public});
        call(Method::PUT, &url, Some(&operator), Some(spec)).await
    };
    assert!(create("open", true).await?.0 < 300);
    assert!(create("closed", false).await?.0 < 300);
    let (status, _) = call(Method::POST, &infer("open"), None, Some(v2_body.clone())).await?;
    assert_ne!(status, 401, "a public deployment answers without a token");
    let (status, _) = call(Method::POST, &infer("closed"), None, Some(v2_body.clone())).await?;
    assert_eq!(status, 401);
    let (status, _) = call(
        Method::DELETE,
        &deployer.url("/api/v1/deployments/open"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(status, 403, "viewers do not remove deployments");
    // Another project's admin: lists none of them, reaches none, cannot deploy into `default`,
    // and deploys into its own.
    let (status, listed) = call(
        Method::GET,
        &deployer.url("/api/v1/deployments"),
        Some(&elsewhere),
        None,
    )
    .await?;
    assert_eq!((status, listed), (200, json!([])));
    let (status, listed) = call(
        Method::GET,
        &deployer.url("/api/v1/deployments"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!((status, listed.as_array().map(Vec::len)), (200, Some(2)));
    for (method, path) in [
        (Method::GET, "/api/v1/deployments/closed"),
        (Method::DELETE, "/api/v1/deployments/closed"),
        (Method::POST, "/v2/models/closed/infer"),
    ] {
        let (status, body) = call(
            method,
            &deployer.url(path),
            Some(&elsewhere),
            Some(v2_body.clone()),
        )
        .await?;
        assert_eq!(status, 403, "{path}: {body}");
    }
    let spec = |project: &str| json!({"model": "fraud", "version": 1, "project": project});
    let (status, body) = call(
        Method::PUT,
        &deployer.url("/api/v1/deployments/fraud-scorer"),
        Some(&elsewhere),
        Some(spec("default")),
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(
        Method::PUT,
        &deployer.url("/api/v1/deployments/fraud-scorer"),
        Some(&elsewhere),
        Some(json!({"model": "fraud", "version": 1})),
    )
    .await?;
    assert_eq!(
        (status, body["project"].as_str()),
        (200, Some("fraud")),
        "{body}"
    );
    let (status, listed) = call(
        Method::GET,
        &deployer.url("/api/v1/deployments"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!((status, listed.as_array().map(Vec::len)), (200, Some(2)));
    let (status, _) = call(
        Method::GET,
        &deployer.url("/api/v1/deployments/fraud-scorer"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(
        status, 403,
        "default's viewer cannot see fraud's deployment"
    );

    // Revoked: refused by every service from then on.
    let (status, revoked) = call(
        Method::DELETE,
        &registry.url(&format!(
            "/api/v1/tokens/{}",
            operator.split('_').nth(1).unwrap_or_default()
        )),
        Some(BOOTSTRAP),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    let (status, body) = call(Method::GET, &datasets, Some(&operator), None).await?;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("token revoked"))
    );
    flywheel_testkit::wait_for(
        "the deployer to learn of the revocation",
        Duration::from_secs(10),
        async || {
            Ok(call(
                Method::GET,
                &deployer.url("/api/v1/deployments"),
                Some(&operator),
                None,
            )
            .await?
            .0 == 401)
        },
    )
    .await?;
    // Expired: refused once its time has passed.
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let brief = token(
        &registry,
        json!({"name": "brief", "project": "default", "role": "viewer", "expires_at": expires_at}),
    )
    .await?;
    assert_eq!(
        call(Method::GET, &datasets, Some(&brief), None).await?.0,
        200
    );
    tokio::time::sleep_until(
        tokio::time::Instant::now()
            + Duration::from_millis(
                u64::try_from((expires_at - chrono::Utc::now()).num_milliseconds()).unwrap_or(0)
                    + 200,
            ),
    )
    .await;
    let (status, body) = call(Method::GET, &datasets, Some(&brief), None).await?;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("token expired"))
    );

    // Every refusal is in the denial log, with who tried when a token said so.
    let mut denials = Vec::new();
    flywheel_testkit::wait_for(
        "the denials in the log",
        Duration::from_secs(15),
        async || {
            let (_, body) = call(
                Method::GET,
                &registry.url("/api/v1/security/denials"),
                Some(BOOTSTRAP),
                None,
            )
            .await?;
            denials = body.as_array().cloned().unwrap_or_default();
            Ok(denials.len() >= 16)
        },
    )
    .await
    .with_context(|| format!("denials: {denials:?}"))?;
    let by = |actor: &str, status: u64| {
        denials
            .iter()
            .any(|d| d["payload"]["actor"] == actor && d["payload"]["status"] == status)
    };
    assert!(by("vera", 403) && by("eve", 403) && by("otto", 403));
    assert!(
        denials
            .iter()
            .any(|d| d["payload"]["service"] == "deployer" && d["payload"]["status"] == 401)
    );
    assert!(
        !Value::from(denials.clone()).to_string().contains(BOOTSTRAP),
        "no secret in the log"
    );
    registry.stop().await?;
    deployer.stop().await
}
