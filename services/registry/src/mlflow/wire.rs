//! MLflow's JSON shapes, with the leniency its clients need: int64 as number or string,
//! doubles as numbers or "NaN"/"Infinity" strings, unknown fields ignored, `run_uuid` for `run_id`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::tracking::{Experiment, KeyValue, Metric, Run, RunInfo};

/// int64 from a JSON number or numeric string.
pub(crate) fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Float(f64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Number(n)) => Ok(Some(n)),
        Some(Raw::Float(f)) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(Some(f as i64)),
        Some(Raw::Float(f)) => Err(serde::de::Error::custom(format!(
            "expected an integer, got {f}"
        ))),
        Some(Raw::Text(s)) if s.is_empty() => Ok(None),
        Some(Raw::Text(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("expected an integer, got `{s}`"))),
    }
}

/// double from a JSON number or "NaN" / "Infinity" / "-Infinity" (or a numeric string).
pub(crate) fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(f64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Number(n)) => Ok(Some(n)),
        Some(Raw::Text(s)) => match s.as_str() {
            "NaN" | "nan" => Ok(Some(f64::NAN)),
            "Infinity" | "inf" => Ok(Some(f64::INFINITY)),
            "-Infinity" | "-inf" => Ok(Some(f64::NEG_INFINITY)),
            other => other
                .parse()
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("expected a number, got `{other}`"))),
        },
    }
}

/// Writes NaN and infinities as MLflow does (JSON has no such numbers).
fn write_f64<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    if value.is_nan() {
        s.serialize_str("NaN")
    } else if value.is_infinite() {
        s.serialize_str(if *value > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        })
    } else {
        s.serialize_f64(*value)
    }
}

/// A key/value pair on the wire.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct WireKeyValue {
    pub(crate) key: String,
    pub(crate) value: String,
}

impl From<WireKeyValue> for KeyValue {
    fn from(kv: WireKeyValue) -> Self {
        KeyValue {
            key: kv.key,
            value: kv.value,
        }
    }
}

impl From<&KeyValue> for WireKeyValue {
    fn from(kv: &KeyValue) -> Self {
        WireKeyValue {
            key: kv.key.clone(),
            value: kv.value.clone(),
        }
    }
}

/// A metric value on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireMetric {
    #[serde(default)]
    pub(crate) key: String,
    #[serde(
        default,
        deserialize_with = "lenient_f64",
        serialize_with = "write_opt_f64"
    )]
    pub(crate) value: Option<f64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub(crate) timestamp: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub(crate) step: Option<i64>,
}

fn write_opt_f64<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => write_f64(v, s),
        None => s.serialize_none(),
    }
}

impl From<&Metric> for WireMetric {
    fn from(m: &Metric) -> Self {
        WireMetric {
            key: m.key.clone(),
            value: Some(m.value),
            timestamp: Some(m.timestamp),
            step: Some(m.step),
        }
    }
}

/// Experiment on the wire.
#[derive(Debug, Serialize)]
pub(crate) struct WireExperiment {
    experiment_id: String,
    name: String,
    artifact_location: String,
    lifecycle_stage: String,
    creation_time: i64,
    last_update_time: i64,
    tags: Vec<WireKeyValue>,
}

impl From<Experiment> for WireExperiment {
    fn from(e: Experiment) -> Self {
        WireExperiment {
            experiment_id: e.id.to_string(),
            name: e.name,
            artifact_location: e.artifact_location,
            lifecycle_stage: e.lifecycle_stage,
            creation_time: e.creation_time,
            last_update_time: e.last_update_time,
            tags: e.tags.iter().map(WireKeyValue::from).collect(),
        }
    }
}

/// RunInfo on the wire.
#[derive(Debug, Serialize)]
pub(crate) struct WireRunInfo {
    run_id: String,
    run_uuid: String,
    run_name: String,
    experiment_id: String,
    user_id: String,
    status: String,
    start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
    artifact_uri: String,
    lifecycle_stage: String,
}

impl From<RunInfo> for WireRunInfo {
    fn from(i: RunInfo) -> Self {
        WireRunInfo {
            run_uuid: i.run_id.clone(),
            run_id: i.run_id,
            run_name: i.run_name,
            experiment_id: i.experiment_id.to_string(),
            user_id: i.user_id,
            status: i.status,
            start_time: i.start_time,
            end_time: i.end_time,
            artifact_uri: i.artifact_uri,
            lifecycle_stage: i.lifecycle_stage,
        }
    }
}

#[derive(Debug, Serialize)]
struct WireRunData {
    metrics: Vec<WireMetric>,
    params: Vec<WireKeyValue>,
    tags: Vec<WireKeyValue>,
}

/// Run on the wire.
#[derive(Debug, Serialize)]
pub(crate) struct WireRun {
    info: WireRunInfo,
    data: WireRunData,
    inputs: serde_json::Value,
    outputs: serde_json::Value,
}

impl From<Run> for WireRun {
    fn from(r: Run) -> Self {
        WireRun {
            data: WireRunData {
                metrics: r.metrics.iter().map(WireMetric::from).collect(),
                params: r.params.iter().map(WireKeyValue::from).collect(),
                tags: r.tags.iter().map(WireKeyValue::from).collect(),
            },
            info: r.info.into(),
            inputs: serde_json::json!({}),
            outputs: serde_json::json!({
                "model_outputs": r.outputs.iter().map(|(model_id, step)| serde_json::json!({"model_id": model_id, "step": step})).collect::<Vec<_>>()
            }),
        }
    }
}
