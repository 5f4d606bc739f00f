//! The scheduler–runner control protocol on core NATS (request/reply, not persisted): runners
//! advertise pool, capacity and liveness by heartbeat and claim an attempt before starting it.
//! Not domain events, so not in the catalogue; encoded with the same codec (MessagePack).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::payloads::Resources;

/// One attempt of one job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct AttemptRef {
    /// Job id.
    pub job_id: String,
    /// Attempt number, from 1.
    pub attempt: u32,
}

/// A runner's heartbeat, sent every few seconds to `<prefix>.scheduler.heartbeats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunnerHeartbeat {
    /// Runner instance id (unique per process).
    pub runner: String,
    /// Pool the runner pulls from.
    pub pool: String,
    /// Total resources of the runner.
    pub capacity: Resources,
    /// Jobs it runs at once.
    pub slots: u32,
    /// Attempts it is running now.
    pub running: Vec<AttemptRef>,
    /// Attempts it finished in the last minutes, whose reports are on their way to the
    /// scheduler (a report can wait for redelivery when a scheduler dies holding it): not lost.
    #[serde(default)]
    pub finished: Vec<AttemptRef>,
}

/// The scheduler's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct HeartbeatReply {
    /// Attempts the runner must stop (cancelled, timed out or superseded).
    pub stop: Vec<AttemptRef>,
}

/// A runner asks to start an attempt it pulled from the work queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AttemptClaim {
    /// The attempt.
    pub attempt: AttemptRef,
    /// Runner instance id.
    pub runner: String,
}

/// The scheduler's answer to a claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClaimReply {
    /// Whether the runner may run the attempt; when false, it drops the message.
    pub granted: bool,
    /// Why not, when refused.
    #[serde(default)]
    pub reason: String,
}

/// Encodes a control message (MessagePack with field names).
pub fn encode_control<T: Serialize>(message: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(message)
}

/// Decodes a control message; MessagePack or JSON (a first byte `{`).
pub fn decode_control<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    if bytes.first() == Some(&b'{') {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    } else {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_round_trip_and_json_is_accepted() {
        let beat = RunnerHeartbeat {
            runner: "r1".into(),
            pool: "default".into(),
            capacity: Resources {
                cpu: 4.0,
                memory_mb: 8192,
                gpu: 0,
            },
            slots: 2,
            running: vec![AttemptRef {
                job_id: "j".into(),
                attempt: 2,
            }],
            finished: Vec::new(),
        };
        let bytes = encode_control(&beat).expect("encode");
        assert_eq!(decode_control::<RunnerHeartbeat>(&bytes), Ok(beat.clone()));
        let json = serde_json::to_vec(&beat).expect("json");
        assert_eq!(decode_control::<RunnerHeartbeat>(&json), Ok(beat));
        assert!(decode_control::<RunnerHeartbeat>(b"\xc1garbage").is_err());
    }
}
