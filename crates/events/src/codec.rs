//! Encoding envelopes as MessagePack (the default) or JSON, chosen by `Content-Type`.
//!
//! Both codecs write the same shape: a map with the envelope fields and the payload, UUIDs and
//! times as strings. So the JSON Schemas in `proto/` describe MessagePack messages too.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::catalogue::{Event, find_kind};
use crate::envelope::{Envelope, Peek, WireHead, WireHeadOwned};

/// The header that names the codec of a message body.
pub const CONTENT_TYPE_HEADER: &str = "Content-Type";

/// Wire encodings an envelope can travel in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentType {
    /// MessagePack with named fields (`application/msgpack`).
    #[default]
    MsgPack,
    /// JSON (`application/json`), for publishers in any language.
    Json,
}

impl ContentType {
    /// The MIME type written to the `Content-Type` header.
    pub fn mime(self) -> &'static str {
        match self {
            ContentType::MsgPack => "application/msgpack",
            ContentType::Json => "application/json",
        }
    }

    /// Picks the codec from a `Content-Type` header; without one, a body starting with `{` is JSON.
    pub fn from_header(header: Option<&str>, body: &[u8]) -> Result<Self, DecodeError> {
        let Some(header) = header else {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            return Ok(if first == Some(&b'{') {
                ContentType::Json
            } else {
                ContentType::MsgPack
            });
        };
        let mime = header
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Ok(ContentType::MsgPack)
            }
            "application/json" | "text/json" => Ok(ContentType::Json),
            _ => Err(DecodeError::UnsupportedContentType(header.to_owned())),
        }
    }
}

/// Why bytes could not be turned into an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a well-formed envelope in the named codec.
    #[error("malformed {codec} envelope: {reason}")]
    Malformed {
        /// `msgpack` or `json`.
        codec: &'static str,
        /// The parser's explanation.
        reason: String,
    },
    /// The `type` is not in this build's catalogue.
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    /// The payload was written with a newer schema than this build understands.
    #[error(
        "event type `{event_type}` has schema_version {found}; this build supports up to {supported}"
    )]
    UnsupportedSchemaVersion {
        /// The event type.
        event_type: String,
        /// The version in the message.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The `Content-Type` header names a codec we do not speak.
    #[error("unsupported content type `{0}` (expected application/msgpack or application/json)")]
    UnsupportedContentType(String),
}

/// Why an envelope could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode event as {codec}: {reason}")]
pub struct EncodeError {
    codec: &'static str,
    reason: String,
}

/// Encodes an envelope in the given codec.
pub fn encode(envelope: &Envelope, content_type: ContentType) -> Result<Vec<u8>, EncodeError> {
    let head = WireHead {
        id: envelope.id,
        event_type: envelope.event.event_type(),
        schema_version: envelope.schema_version,
        time: envelope.time,
        source: &envelope.source,
        project: &envelope.project,
        correlation_id: envelope.correlation_id,
        causation_id: envelope.causation_id,
    };
    envelope.event.encode_with(&head, content_type)
}

/// Decodes an envelope; never panics, whatever the bytes.
pub fn decode(bytes: &[u8], content_type: ContentType) -> Result<Envelope, DecodeError> {
    let peek: Peek = from_bytes(bytes, content_type)?;
    let kind = find_kind(&peek.event_type)
        .ok_or_else(|| DecodeError::UnknownType(peek.event_type.clone()))?;
    if peek.schema_version > kind.schema_version {
        return Err(DecodeError::UnsupportedSchemaVersion {
            event_type: peek.event_type,
            found: peek.schema_version,
            supported: kind.schema_version,
        });
    }
    let (head, event) = Event::decode_with(kind.name, bytes, content_type)?;
    Ok(Envelope {
        id: head.id,
        schema_version: head.schema_version,
        time: head.time,
        source: head.source,
        project: head.project,
        correlation_id: head.correlation_id,
        causation_id: head.causation_id,
        event,
    })
}

/// Encodes and decodes with the codec named by a `Content-Type` header value.
pub fn decode_with_header(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<Envelope, DecodeError> {
    decode(bytes, ContentType::from_header(content_type, bytes)?)
}

#[derive(Serialize)]
struct WireOut<'a, P> {
    id: Uuid,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema_version: u32,
    time: DateTime<Utc>,
    source: &'a str,
    project: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    causation_id: Option<Uuid>,
    payload: &'a P,
}

#[derive(Deserialize)]
struct WireIn<P> {
    id: Uuid,
    schema_version: u32,
    time: DateTime<Utc>,
    source: String,
    project: String,
    #[serde(default)]
    correlation_id: Option<Uuid>,
    #[serde(default)]
    causation_id: Option<Uuid>,
    payload: P,
}

pub(crate) fn encode_wire<P: Serialize>(
    head: &WireHead<'_>,
    payload: &P,
    content_type: ContentType,
) -> Result<Vec<u8>, EncodeError> {
    let wire = WireOut {
        id: head.id,
        event_type: head.event_type,
        schema_version: head.schema_version,
        time: head.time,
        source: head.source,
        project: head.project,
        correlation_id: head.correlation_id,
        causation_id: head.causation_id,
        payload,
    };
    match content_type {
        ContentType::Json => serde_json::to_vec(&wire).map_err(|e| EncodeError {
            codec: "json",
            reason: e.to_string(),
        }),
        ContentType::MsgPack => {
            let mut buf = Vec::with_capacity(256);
            let mut serializer = rmp_serde::Serializer::new(&mut buf)
                .with_struct_map()
                .with_human_readable();
            wire.serialize(&mut serializer).map_err(|e| EncodeError {
                codec: "msgpack",
                reason: e.to_string(),
            })?;
            Ok(buf)
        }
    }
}

pub(crate) fn decode_wire<P: DeserializeOwned>(
    bytes: &[u8],
    content_type: ContentType,
) -> Result<(WireHeadOwned, P), DecodeError> {
    let wire: WireIn<P> = from_bytes(bytes, content_type)?;
    let head = WireHeadOwned {
        id: wire.id,
        schema_version: wire.schema_version,
        time: wire.time,
        source: wire.source,
        project: wire.project,
        correlation_id: wire.correlation_id,
        causation_id: wire.causation_id,
    };
    Ok((head, wire.payload))
}

fn from_bytes<T: DeserializeOwned>(
    bytes: &[u8],
    content_type: ContentType,
) -> Result<T, DecodeError> {
    match content_type {
        ContentType::Json => serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed {
            codec: "json",
            reason: e.to_string(),
        }),
        ContentType::MsgPack => {
            let mut deserializer =
                rmp_serde::Deserializer::from_read_ref(bytes).with_human_readable();
            T::deserialize(&mut deserializer).map_err(|e| DecodeError::Malformed {
                codec: "msgpack",
                reason: e.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payloads::*;

    fn sample() -> Envelope {
        Envelope::new(
            "test",
            "acme",
            Event::TrainingRequested(TrainingRequested {
                request_id: "req-1".into(),
                model: "churn".into(),
                dataset: DatasetRef {
                    name: "customers".into(),
                    version: "abc".into(),
                },
                trainer: TrainerSpec {
                    kind: "builtin".into(),
                    name: "logistic_regression".into(),
                    params: [("c".to_owned(), serde_json::json!(0.5))].into(),
                },
                resources: Resources {
                    cpu: 1.5,
                    memory_mb: 512,
                    gpu: 0,
                },
                priority: 3,
                reason: TrainingReason::Drift,
                search: None,
                gates: vec![QualityGate {
                    metric: "accuracy".into(),
                    op: ">=".into(),
                    threshold: 0.8,
                }],
                timeout_seconds: Some(600),
            }),
        )
    }

    #[test]
    fn round_trips_in_both_codecs() {
        let envelope = sample();
        for ct in [ContentType::MsgPack, ContentType::Json] {
            let bytes = encode(&envelope, ct).expect("encode");
            assert_eq!(decode(&bytes, ct).expect("decode"), envelope, "{ct:?}");
        }
    }

    #[test]
    fn msgpack_is_smaller_than_json_and_uses_named_fields() {
        let envelope = sample();
        let packed = encode(&envelope, ContentType::MsgPack).expect("encode");
        let json = encode(&envelope, ContentType::Json).expect("encode");
        assert!(packed.len() < json.len());
        // Field names travel in the map, so other languages can decode without our structs.
        assert!(
            packed
                .windows(b"request_id".len())
                .any(|w| w == b"request_id")
        );
    }

    #[test]
    fn header_picks_codec_and_sniffs_json_without_header() {
        assert_eq!(
            ContentType::from_header(Some("application/json; charset=utf-8"), b""),
            Ok(ContentType::Json)
        );
        assert_eq!(
            ContentType::from_header(Some("application/msgpack"), b"{"),
            Ok(ContentType::MsgPack)
        );
        assert_eq!(
            ContentType::from_header(None, b"  {\"id\":1}"),
            Ok(ContentType::Json)
        );
        assert_eq!(
            ContentType::from_header(None, &[0x88]),
            Ok(ContentType::MsgPack)
        );
        assert!(matches!(
            ContentType::from_header(Some("text/xml"), b""),
            Err(DecodeError::UnsupportedContentType(_))
        ));
    }

    #[test]
    fn unknown_type_is_a_typed_error() {
        let mut value: serde_json::Value =
            serde_json::from_slice(&encode(&sample(), ContentType::Json).expect("encode"))
                .expect("json");
        value["type"] = "training.exploded".into();
        let err = decode(&serde_json::to_vec(&value).expect("vec"), ContentType::Json)
            .expect_err("must fail");
        assert_eq!(err, DecodeError::UnknownType("training.exploded".into()));
    }

    #[test]
    fn newer_schema_version_is_a_typed_error() {
        let mut value: serde_json::Value =
            serde_json::from_slice(&encode(&sample(), ContentType::Json).expect("encode"))
                .expect("json");
        value["schema_version"] = 7.into();
        let err = decode(&serde_json::to_vec(&value).expect("vec"), ContentType::Json)
            .expect_err("must fail");
        assert_eq!(
            err,
            DecodeError::UnsupportedSchemaVersion {
                event_type: "training.requested".into(),
                found: 7,
                supported: 1
            }
        );
    }

    #[test]
    fn wrong_shape_names_the_missing_field() {
        let mut value: serde_json::Value =
            serde_json::from_slice(&encode(&sample(), ContentType::Json).expect("encode"))
                .expect("json");
        value["payload"]
            .as_object_mut()
            .expect("object")
            .remove("model");
        let err = decode(&serde_json::to_vec(&value).expect("vec"), ContentType::Json)
            .expect_err("must fail");
        match err {
            DecodeError::Malformed {
                codec: "json",
                reason,
            } => assert!(reason.contains("model"), "{reason}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let packed = encode(&sample(), ContentType::MsgPack).expect("encode");
        for cut in 0..packed.len() {
            assert!(
                decode(&packed[..cut], ContentType::MsgPack).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        let json = encode(&sample(), ContentType::Json).expect("encode");
        for cut in 0..json.len() {
            assert!(decode(&json[..cut], ContentType::Json).is_err());
        }
        // A deterministic pseudo-random byte soup, including huge declared lengths.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = decode(&bytes, ContentType::MsgPack);
            let _ = decode(&bytes, ContentType::Json);
        }
        let huge_string = [0xdb, 0xff, 0xff, 0xff, 0xff, b'a'];
        assert!(decode(&huge_string, ContentType::MsgPack).is_err());
        let deep = "[".repeat(100_000);
        assert!(decode(deep.as_bytes(), ContentType::Json).is_err());
        let deep_pack = vec![0x91u8; 100_000];
        assert!(decode(&deep_pack, ContentType::MsgPack).is_err());
    }

    #[test]
    fn causation_links_chain() {
        let first = sample();
        let second = Envelope::caused_by(
            &first,
            "scheduler",
            Event::TrainingJobQueued(TrainingJobQueued {
                job_id: "j".into(),
                request_id: "req-1".into(),
                model: "churn".into(),
                priority: 3,
            }),
        );
        assert_eq!(second.correlation_id, Some(first.id));
        assert_eq!(second.causation_id, Some(first.id));
        assert_eq!(second.project, "acme");
        assert!(second.id > first.id, "UUIDv7 ids sort by time");
    }
}
