//! Property tests of the event decoder: whatever arrives on the bus — random bytes, a valid
//! envelope with bytes flipped or cut short — decoding answers an error or an envelope, never a
//! panic; and every envelope it accepts encodes and decodes to itself.

use flywheel_events::payloads::{PredictionLogged, TrainingReason};
use flywheel_events::{ContentType, Envelope, Event, decode, encode};
use proptest::prelude::*;

fn valid(content_type: ContentType, n: u64) -> Vec<u8> {
    let envelope = Envelope::new(
        "prop",
        "default",
        Event::PredictionLogged(PredictionLogged {
            deployment: "churn".into(),
            model: "churn".into(),
            version: 3,
            request_id: format!("r-{n}"),
            inputs: [("age".to_owned(), serde_json::json!(n % 90))].into(),
            outputs: [("prediction".to_owned(), serde_json::json!(1))].into(),
            latency_us: n,
            shadow: false,
            error: None,
        }),
    );
    encode(&envelope, content_type).unwrap_or_default()
}

/// Accepted bytes decode to an envelope that survives another round trip unchanged.
fn decodes_sanely(bytes: &[u8], content_type: ContentType) {
    if let Ok(envelope) = decode(bytes, content_type) {
        let again = encode(&envelope, content_type).map(|b| decode(&b, content_type));
        assert!(
            matches!(&again, Ok(Ok(e)) if *e == envelope),
            "an accepted envelope did not round-trip"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decodes_sanely(&bytes, ContentType::Json);
        decodes_sanely(&bytes, ContentType::MsgPack);
        let _ = flywheel_events::decode_with_header(&bytes, Some("application/json; charset=utf-8"));
        let _ = flywheel_events::decode_with_header(&bytes, None);
    }

    #[test]
    fn damaged_envelopes_never_panic(
        n in any::<u64>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
        json in any::<bool>(),
    ) {
        let content_type = if json { ContentType::Json } else { ContentType::MsgPack };
        let mut bytes = valid(content_type, n);
        prop_assert!(decode(&bytes, content_type).is_ok());
        for (at, value) in flips {
            let len = bytes.len();
            bytes[at % len] ^= value;
        }
        decodes_sanely(&bytes, content_type);
        let len = bytes.len();
        bytes.truncate(cut % len);
        decodes_sanely(&bytes, content_type);
    }

    #[test]
    fn hostile_json_payloads_are_refused_not_panicked_on(
        event_type in prop::sample::select(vec!["training.requested", "prediction.logged", "model.version.registered", "nope"]),
        schema_version in any::<u32>(),
        payload in "[ -~]{0,200}",
    ) {
        let text = format!(
            r#"{{"id":"0193a7f0-0000-7000-8000-000000000001","type":"{event_type}","schema_version":{schema_version},"time":"2026-11-27T10:00:00Z","source":"x","project":"p","payload":{payload}}}"#
        );
        decodes_sanely(text.as_bytes(), ContentType::Json);
        if schema_version > 1 {
            prop_assert!(decode(text.as_bytes(), ContentType::Json).is_err());
        }
    }
}

#[test]
fn the_reason_enum_is_closed() {
    // A made-up reason is refused, not mapped to a default.
    let text = r#"{"id":"0193a7f0-0000-7000-8000-000000000001","type":"training.requested","schema_version":1,"time":"2026-11-27T10:00:00Z","source":"x","project":"p","payload":{"request_id":"r","model":"m","dataset":{"name":"d","version":"v"},"trainer":{"kind":"builtin","name":"logistic_regression"},"resources":{"cpu":1,"memory_mb":1},"reason":"because"}}"#;
    assert!(decode(text.as_bytes(), ContentType::Json).is_err());
    let fine = text.replace("because", "manual");
    let decoded = decode(fine.as_bytes(), ContentType::Json);
    assert!(matches!(
        decoded.map(|e| e.event),
        Ok(Event::TrainingRequested(r)) if r.reason == TrainingReason::Manual
    ));
}
