//! The published contract: a JSON Schema per event type and an AsyncAPI document.
//!
//! `proto/` in the repository is generated from here (`cargo run -p flywheel-events --bin
//! flywheel-proto`), and a test fails when it is stale.

use serde_json::{Map, Value, json};

use crate::catalogue::{CATALOGUE, Channel, Event, EventKind};

/// One generated file: its path relative to `proto/` and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoFile {
    /// Path under `proto/`, with `/` separators.
    pub path: String,
    /// File contents (pretty JSON with a trailing newline).
    pub contents: String,
}

/// Every file of `proto/`, generated from the catalogue.
pub fn proto_files() -> Vec<ProtoFile> {
    let mut files: Vec<ProtoFile> = CATALOGUE
        .iter()
        .map(|kind| ProtoFile {
            path: schema_path(kind),
            contents: pretty(&event_schema(kind)),
        })
        .collect();
    files.push(ProtoFile {
        path: "asyncapi.json".into(),
        contents: pretty(&asyncapi()),
    });
    files.extend(control_files());
    files
}

/// The scheduler–runner control messages (core NATS request/reply), for runners written in
/// other languages.
fn control_files() -> Vec<ProtoFile> {
    use crate::control::{AttemptClaim, ClaimReply, HeartbeatReply, RunnerHeartbeat};
    [
        ("runner-heartbeat", schemars::schema_for!(RunnerHeartbeat)),
        ("heartbeat-reply", schemars::schema_for!(HeartbeatReply)),
        ("attempt-claim", schemars::schema_for!(AttemptClaim)),
        ("claim-reply", schemars::schema_for!(ClaimReply)),
    ]
    .into_iter()
    .map(|(name, schema)| ProtoFile {
        path: format!("control/{name}.schema.json"),
        contents: pretty(&schema.to_value()),
    })
    .collect()
}

fn schema_path(kind: &EventKind) -> String {
    format!("events/{}.schema.json", kind.name)
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// The JSON Schema of a whole envelope carrying one event type.
pub fn event_schema(kind: &EventKind) -> Value {
    let mut payload = Event::payload_schema(kind.name)
        .map(|s| s.to_value())
        .unwrap_or_else(|| json!({}));
    let defs = payload.as_object_mut().and_then(|p| {
        p.remove("$schema");
        p.remove("title");
        p.remove("$defs")
    });
    let uuid =
        |description: &str| json!({"type": "string", "format": "uuid", "description": description});
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("https://flywheel.dev/proto/{}", schema_path(kind)),
        "title": kind.name,
        "description": kind.description,
        "type": "object",
        "required": ["id", "type", "schema_version", "time", "source", "project", "payload"],
        "properties": {
            "id": uuid("Unique event id (UUIDv7); also the Nats-Msg-Id used for de-duplication."),
            "type": {"const": kind.name},
            "schema_version": {"type": "integer", "minimum": 1, "maximum": kind.schema_version},
            "time": {"type": "string", "format": "date-time", "description": "When the event happened (RFC 3339)."},
            "source": {"type": "string", "description": "The publishing component or system."},
            "project": {"type": "string", "description": "The project (tenant) the event belongs to."},
            "correlation_id": uuid("Shared by every event of one causal chain."),
            "causation_id": uuid("The event that caused this one."),
            "payload": payload,
        },
    });
    if let (Some(defs), Some(obj)) = (defs, schema.as_object_mut()) {
        obj.insert("$defs".into(), defs);
    }
    schema
}

/// The AsyncAPI 2.6 document listing every channel and message.
pub fn asyncapi() -> Value {
    let mut channels = Map::new();
    let mut messages = Map::new();
    let prefix = json!({"description": "Installation prefix (configurable).", "schema": {"type": "string", "default": "flywheel"}});
    let deployment = json!({"description": "Deployment name.", "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}});
    for kind in CATALOGUE {
        let (channel, parameters, stream) = match kind.channel {
            Channel::Events => (
                format!("{{prefix}}.events.{}", kind.name),
                json!({"prefix": prefix}),
                "EVENTS",
            ),
            Channel::Predictions => (
                "{prefix}.predictions.{deployment}".to_owned(),
                json!({"prefix": prefix, "deployment": deployment}),
                "PREDICTIONS",
            ),
            Channel::Feedback => (
                "{prefix}.feedback.{deployment}".to_owned(),
                json!({"prefix": prefix, "deployment": deployment}),
                "PREDICTIONS",
            ),
        };
        channels.insert(
            channel,
            json!({
                "description": format!("{} Stored on the `<PREFIX>_{stream}` JetStream stream.", kind.description),
                "parameters": parameters,
                "subscribe": {"message": {"$ref": format!("#/components/messages/{}", kind.name)}},
            }),
        );
        messages.insert(
            kind.name.to_owned(),
            json!({
                "name": kind.name,
                "title": kind.name,
                "summary": kind.description,
                "contentType": "application/msgpack",
                "headers": {"$ref": "#/components/schemas/headers"},
                "payload": {"$ref": schema_path(kind)},
            }),
        );
    }
    json!({
        "asyncapi": "2.6.0",
        "id": "urn:flywheel:events",
        "info": {
            "title": "Flywheel events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every event Flywheel publishes on NATS JetStream. Bodies are MessagePack \
                (maps with named fields) by default; JSON is accepted everywhere, told apart by the \
                Content-Type header. Generated from crates/events; do not edit by hand.",
        },
        "defaultContentType": "application/msgpack",
        "channels": channels,
        "components": {
            "messages": messages,
            "schemas": {
                "headers": {
                    "type": "object",
                    "properties": {
                        "Nats-Msg-Id": {"type": "string", "description": "The envelope id; JetStream drops duplicates within the window."},
                        "Content-Type": {"type": "string", "enum": ["application/msgpack", "application/json"]},
                        "traceparent": {"type": "string", "description": "W3C trace context."},
                        "tracestate": {"type": "string"},
                        "Flywheel-Event-Type": {"type": "string", "description": "The envelope type, for routing without decoding."},
                    },
                },
            },
        },
    })
}

/// Writes every generated file under `dir` (normally `proto/`), removing stale event schemas.
pub fn write_proto(dir: &std::path::Path) -> std::io::Result<()> {
    let events = dir.join("events");
    if events.exists() {
        std::fs::remove_dir_all(&events)?;
    }
    std::fs::create_dir_all(&events)?;
    std::fs::create_dir_all(dir.join("control"))?;
    for file in proto_files() {
        std::fs::write(dir.join(&file.path), file.contents)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn proto_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto")
    }

    /// Fails when `proto/` differs from what the code generates; `FLYWHEEL_BLESS=1` rewrites it.
    #[test]
    fn proto_dir_is_up_to_date() {
        let dir = proto_dir();
        if std::env::var_os("FLYWHEEL_BLESS").is_some() {
            crate::schema::write_proto(&dir).expect("write proto/");
        }
        let mut stale = Vec::new();
        for file in proto_files() {
            let on_disk = std::fs::read_to_string(dir.join(&file.path)).unwrap_or_default();
            if on_disk != file.contents {
                stale.push(file.path);
            }
        }
        assert!(
            stale.is_empty(),
            "proto/ is stale for {stale:?}; run `cargo run -p flywheel-events --bin flywheel-proto`"
        );
        let generated: std::collections::BTreeSet<String> =
            proto_files().into_iter().map(|f| f.path).collect();
        let events_dir = dir.join("events");
        for entry in std::fs::read_dir(&events_dir).expect("proto/events exists") {
            let name = format!(
                "events/{}",
                entry.expect("entry").file_name().to_string_lossy()
            );
            assert!(
                generated.contains(&name),
                "proto/{name} is not generated by the code any more"
            );
        }
    }

    /// The examples in `proto/examples` (also checked against the schemas by
    /// `scripts/check_proto.py`) decode with the real decoder, so schema and code agree.
    #[test]
    fn proto_examples_decode() {
        let dir = proto_dir().join("examples");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).expect("proto/examples exists") {
            let path = entry.expect("entry").path();
            let bytes = std::fs::read(&path).expect("read example");
            let envelope = crate::decode(&bytes, crate::ContentType::Json)
                .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            assert_eq!(envelope.event_type(), stem, "{}", path.display());
            // And it survives a MessagePack round trip unchanged.
            let packed = crate::encode(&envelope, crate::ContentType::MsgPack).expect("encode");
            assert_eq!(
                crate::decode(&packed, crate::ContentType::MsgPack).expect("decode"),
                envelope
            );
            count += 1;
        }
        assert!(count >= 3, "expected the committed examples, found {count}");
    }

    #[test]
    fn schema_pins_type_and_lists_payload_fields() {
        let kind = crate::catalogue::find_kind("training.requested").expect("kind");
        let schema = event_schema(kind);
        assert_eq!(schema["properties"]["type"]["const"], "training.requested");
        let required = schema["properties"]["payload"]["required"]
            .as_array()
            .expect("required");
        assert!(required.contains(&json!("request_id")));
        assert!(
            schema["$defs"]["DatasetRef"].is_object(),
            "definitions are hoisted so $refs resolve"
        );
    }
}
