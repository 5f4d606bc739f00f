//! The OpenAPI 3.1 document of `/api/v1`, served at `/api/v1/openapi.json`. Schemas come from
//! the same Rust types the handlers use (schemars, JSON Schema 2020-12), so they cannot drift.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::{DecisionRequest, PromotionRequest, PushReference, RetrainRequest};
use crate::datasets::DatasetVersion;
use crate::models::AuditEntry;
use crate::models::governance::{Policy, Promotion};
use crate::readmodels::{AlertView, DeploymentView, JobView};

struct Doc {
    generator: SchemaGenerator,
    paths: Map<String, Value>,
}

/// A response or request body: a schema reference, or nothing.
type Body = Option<Value>;

impl Doc {
    fn schema<T: JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    fn operation(
        &mut self,
        method: &str,
        path: &str,
        summary: &str,
        body: Body,
        ok: (u16, Body),
        errors: &[u16],
    ) {
        let parameters: Vec<Value> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut responses = Map::new();
        let ok_body = match ok.1 {
            Some(schema) => {
                json!({"description": "success", "content": {"application/json": {"schema": schema}}})
            }
            None => json!({"description": "success"}),
        };
        responses.insert(ok.0.to_string(), ok_body);
        // What any route may answer: a malformed path or query (400), no or a bad token (401),
        // a role too low (403), too slow (408), overloaded or starting (503); with a body also
        // too large (413), not JSON (415), or refused (422).
        let platform: &[u16] = if body.is_some() {
            &[400, 401, 403, 408, 413, 415, 422, 503]
        } else {
            &[400, 401, 403, 408, 503]
        };
        let mut statuses: Vec<u16> = errors.iter().chain(platform).copied().collect();
        statuses.sort_unstable();
        statuses.dedup();
        for status in &statuses {
            responses.insert(
                status.to_string(),
                json!({"description": error_description(*status), "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
            );
        }
        let mut operation = json!({"summary": summary, "operationId": operation_id(method, path), "parameters": parameters, "responses": responses});
        if let Some(schema) = body {
            operation["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        let entry = self
            .paths
            .entry(path.to_owned())
            .or_insert_with(|| json!({}));
        entry[method] = operation;
    }
}

fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<String> = path
        .trim_start_matches("/api/v1/")
        .split('/')
        .map(|s| s.trim_matches(['{', '}']).replace('-', "_"))
        .collect();
    format!("{method}_{}", words.join("_"))
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "malformed request",
        401 => "no valid token (Authorization: Bearer, when authentication is on)",
        403 => "not allowed",
        408 => "timed out",
        404 => "not found",
        409 => "conflicts with the current state",
        413 => "body too large",
        415 => "the body is not JSON",
        422 => "refused (invalid body or failed gates)",
        503 => "starting, overloaded, or a service it needs does not answer",
        _ => "error",
    }
}

/// Builds the document.
pub(crate) fn document() -> Value {
    let settings =
        SchemaSettings::draft2020_12().with(|s| s.definitions_path = "/components/schemas/".into());
    let mut doc = Doc {
        generator: settings.into_generator(),
        paths: Map::new(),
    };
    let list = |item: Value| json!({"type": "array", "items": item});

    let dataset_version = doc.schema::<DatasetVersion>();
    let expectations = doc.schema::<Vec<flywheel_data::Expectation>>();
    let profile = doc.schema::<flywheel_data::Profile>();
    let reference = doc.schema::<PushReference>();
    doc.operation(
        "get",
        "/api/v1/datasets/{name}/suite",
        "The dataset's validation suite",
        None,
        (200, Some(expectations.clone())),
        &[400],
    );
    doc.operation(
        "put",
        "/api/v1/datasets/{name}/suite",
        "Set the dataset's validation suite",
        Some(expectations.clone()),
        (200, Some(expectations)),
        &[400, 422],
    );
    doc.operation(
        "get",
        "/api/v1/datasets/{name}/versions",
        "Versions of a dataset, newest first",
        None,
        (200, Some(list(dataset_version.clone()))),
        &[400],
    );
    doc.operation(
        "post",
        "/api/v1/datasets/{name}/versions",
        "Push a version: the CSV or Parquet file as the body (?format=csv|parquet), or {\"key\"} of an object in the store as JSON. 201 when new, 200 when the same bytes exist.",
        Some(reference),
        (201, Some(dataset_version.clone())),
        &[400, 404, 413],
    );
    if let Some(post) = doc
        .paths
        .get_mut("/api/v1/datasets/{name}/versions")
        .and_then(|p| p.get_mut("post"))
    {
        post["requestBody"]["content"]["text/csv"] = json!({"schema": {"type": "string"}});
        post["requestBody"]["content"]["application/octet-stream"] =
            json!({"schema": {"type": "string", "format": "binary"}});
        if let Some(parameters) = post["parameters"].as_array_mut() {
            parameters.push(json!({"name": "format", "in": "query", "required": false, "schema": {"type": "string", "enum": ["csv", "parquet"]}}));
        }
        post["responses"]["200"] = json!({"description": "the same bytes were pushed before", "content": {"application/json": {"schema": dataset_version}}});
    }
    doc.operation(
        "get",
        "/api/v1/datasets/{name}/versions/{version}",
        "One dataset version with its validation outcome",
        None,
        (200, Some(dataset_version)),
        &[404],
    );
    doc.operation(
        "get",
        "/api/v1/datasets/{name}/versions/{version}/profile",
        "The version's column profile",
        None,
        (200, Some(profile)),
        &[404],
    );

    let policy = doc.schema::<Policy>();
    doc.operation(
        "get",
        "/api/v1/models/{name}/policy",
        "The model's governance policy",
        None,
        (200, Some(policy.clone())),
        &[404],
    );
    doc.operation(
        "put",
        "/api/v1/models/{name}/policy",
        "Set the model's governance policy",
        Some(policy.clone()),
        (200, Some(policy)),
        &[400, 404, 422],
    );
    let promotion = doc.schema::<Promotion>();
    let promotion_request = doc.schema::<PromotionRequest>();
    doc.operation(
        "post",
        "/api/v1/models/{name}/versions/{version}/promotions",
        "Request moving an alias to a version (applied at once unless the policy wants approvals)",
        Some(promotion_request),
        (200, Some(promotion.clone())),
        &[400, 404, 422],
    );
    doc.operation(
        "get",
        "/api/v1/promotions/{id}",
        "A promotion request and its decisions",
        None,
        (200, Some(promotion.clone())),
        &[404],
    );
    let decision = doc.schema::<DecisionRequest>();
    doc.operation(
        "post",
        "/api/v1/promotions/{id}/approve",
        "Approve (enough approvals apply the promotion)",
        Some(decision.clone()),
        (200, Some(promotion.clone())),
        &[403, 404, 409, 422],
    );
    doc.operation(
        "post",
        "/api/v1/promotions/{id}/reject",
        "Reject the promotion",
        Some(decision),
        (200, Some(promotion)),
        &[403, 404, 409],
    );
    let audit = doc.schema::<Vec<AuditEntry>>();
    doc.operation(
        "get",
        "/api/v1/models/{name}/audit",
        "Every audited change of the model, oldest first",
        None,
        (200, Some(audit)),
        &[404],
    );
    let retrain = doc.schema::<RetrainRequest>();
    doc.operation(
        "post",
        "/api/v1/models/{name}/retrain",
        "Request a retraining (training.requested) on a dataset version, the latest by default",
        Some(retrain),
        (202, Some(json!({"type": "object", "properties": {"request_id": {"type": "string"}}, "required": ["request_id"]}))),
        &[400, 404, 422],
    );
    let lineage = doc.schema::<super::Lineage>();
    doc.operation(
        "get",
        "/api/v1/models/{name}/versions/{version}/lineage",
        "Dataset version, run, job and code a version came from, and the deployments serving it",
        None,
        (200, Some(lineage)),
        &[404],
    );
    let jobs = doc.schema::<Vec<JobView>>();
    doc.operation(
        "get",
        "/api/v1/jobs",
        "Training jobs as the registry last heard of them",
        None,
        (200, Some(jobs)),
        &[],
    );
    let deployments = doc.schema::<Vec<DeploymentView>>();
    doc.operation(
        "get",
        "/api/v1/deployments",
        "Deployments (?model= to filter)",
        None,
        (200, Some(deployments)),
        &[],
    );
    if let Some(get) = doc
        .paths
        .get_mut("/api/v1/deployments")
        .and_then(|p| p.get_mut("get"))
    {
        get["parameters"] = json!([{"name": "model", "in": "query", "required": false, "schema": {"type": "string"}}]);
    }
    let alerts = doc.schema::<Vec<AlertView>>();
    doc.operation(
        "get",
        "/api/v1/alerts",
        "Monitor alerts (?open=true for open ones)",
        None,
        (200, Some(alerts)),
        &[],
    );
    if let Some(get) = doc
        .paths
        .get_mut("/api/v1/alerts")
        .and_then(|p| p.get_mut("get"))
    {
        get["parameters"] = json!([{"name": "open", "in": "query", "required": false, "schema": {"type": "boolean"}}]);
    }
    doc.operation(
        "get",
        "/api/v1/overview",
        "Counts of the loop for the dashboard: datasets, models, jobs and deployments by status, open alerts",
        None,
        (200, Some(json!({"type": "object", "properties": {
            "datasets": {"type": "integer"}, "dataset_versions": {"type": "integer"},
            "models": {"type": "integer"}, "model_versions": {"type": "integer"},
            "jobs": {"type": "object", "additionalProperties": {"type": "integer"}},
            "deployments": {"type": "object", "additionalProperties": {"type": "integer"}},
            "open_alerts": {"type": "integer"}}}))),
        &[],
    );
    doc.operation(
        "get",
        "/api/v1/events/stream",
        "Every domain event as it is published (server-sent events named by event type; data: the JSON envelope)",
        None,
        (200, None),
        &[503],
    );
    let object = || Some(json!({"type": "object"}));
    let list = || Some(json!({"type": "array", "items": {"type": "object"}}));
    for (method, path, summary, ok, errors) in [
        (
            "get",
            "/api/v1/datasets",
            "Every dataset with its version count and latest version",
            list(),
            &[][..],
        ),
        (
            "get",
            "/api/v1/events/recent",
            "The latest events from the event log (query: model, deployment, limit)",
            list(),
            &[][..],
        ),
        (
            "get",
            "/api/v1/delivery",
            "Delivery metrics from the event log: lead time, rollouts per day, change failure rate, drift to recovery",
            object(),
            &[][..],
        ),
        (
            "get",
            "/api/v1/dashboard/jobs",
            "The job queue with each job's runner and latest progress",
            list(),
            &[][..],
        ),
        (
            "get",
            "/api/v1/dashboard/models/{name}",
            "A model with its versions, gates, promotions, audit log and deployments",
            object(),
            &[404][..],
        ),
        (
            "get",
            "/api/v1/dashboard/runs/{run_id}",
            "A run's parameters, tags and latest metrics",
            object(),
            &[404][..],
        ),
        (
            "get",
            "/api/v1/deployments/{name}/history",
            "A deployment's rollouts, alerts and monitored windows from the event log",
            object(),
            &[][..],
        ),
        (
            "post",
            "/api/v1/deployments/{name}/rollback",
            "Roll back to the version that served before (an alias-following deployment: a promotion of that version)",
            object(),
            &[404, 409, 503][..],
        ),
        (
            "post",
            "/api/v1/jobs/{id}/cancel",
            "Cancel a job (relayed to the scheduler)",
            object(),
            &[404, 409, 503][..],
        ),
    ] {
        doc.operation(method, path, summary, None, (200, ok), errors);
    }
    let role = json!({"enum": ["viewer", "operator", "approver", "admin"]});
    let nullable_time = json!({"type": ["string", "null"], "format": "date-time"});
    let token = json!({"type": "object",
        "required": ["id", "name", "project", "role", "secret_sha256", "created_by", "created_at"],
        "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "project": {"type": "string"},
            "role": role, "secret_sha256": {"type": "string"}, "created_by": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"}, "expires_at": nullable_time,
            "revoked_at": nullable_time}});
    let mut issued = token.clone();
    issued["required"] = json!(["token", "id", "name", "project", "role"]);
    issued["properties"]["token"] = json!({"type": "string"});
    let new_token = json!({"type": "object", "required": ["name", "project", "role"],
        "additionalProperties": false,
        "properties": {"name": {"type": "string"}, "project": {"type": "string"}, "role": role,
            "expires_at": nullable_time}});
    let session = json!({"type": "object", "required": ["name", "project", "role", "auth"],
        "properties": {"name": {"type": "string"}, "project": {"type": "string"}, "role": role,
            "csrf_token": {"type": ["string", "null"]}, "auth": {"type": "boolean"}}});
    doc.operation(
        "post",
        "/api/v1/tokens",
        "Create an API token (admin); the answer is the only time its secret is shown",
        Some(new_token),
        (201, Some(issued)),
        &[],
    );
    doc.operation(
        "get",
        "/api/v1/tokens",
        "The tokens an admin may see (hashes only)",
        None,
        (200, Some(json!({"type": "array", "items": token}))),
        &[422],
    );
    doc.operation(
        "delete",
        "/api/v1/tokens/{id}",
        "Revoke a token: every service refuses it from then on",
        None,
        (200, Some(token)),
        &[422],
    );
    doc.operation(
        "get",
        "/api/v1/session",
        "Who the session cookie (or bearer token) is, and its CSRF token",
        None,
        (200, Some(session.clone())),
        &[],
    );
    doc.operation("post", "/api/v1/session", "Sign the dashboard in: the token becomes an HTTP-only session cookie", Some(json!({"type": "object", "required": ["token"], "additionalProperties": false, "properties": {"token": {"type": "string"}}})), (200, Some(session)), &[]);
    doc.operation(
        "delete",
        "/api/v1/session",
        "Sign out (clears the cookie)",
        None,
        (204, None),
        &[],
    );
    doc.operation(
        "get",
        "/api/v1/security/denials",
        "Refused requests across the platform (admin), as security.access.denied envelopes",
        None,
        (200, list()),
        &[],
    );
    doc.operation(
        "get",
        "/api/v1/openapi.json",
        "This document",
        None,
        (200, Some(json!({"type": "object"}))),
        &[],
    );

    let mut schemas = doc.generator.take_definitions(true);
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Flywheel registry",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Datasets, governance, promotions, audit log and read-models. The MLflow-compatible API lives under /api/2.0/mlflow/. Acting user: the token's holder with authentication on, else the X-Flywheel-Actor header."
        },
        "paths": doc.paths,
        // With authentication off no token is needed; on, an API token (docs: Security).
        "security": [{}, {"bearer": []}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "an API token, fwt_<id>_<secret>"}},
        },
    })
}
