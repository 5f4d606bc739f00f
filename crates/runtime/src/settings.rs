//! Layered configuration: built-in defaults, then a TOML file, then `FLYWHEEL__SECTION__KEY`
//! environment variables (env wins, as compose and Kubernetes expect).

use std::path::Path;

use flywheel_artifacts::ArtifactsConfig;
use flywheel_bus::BusConfig;
use flywheel_db::DbConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ServiceError;
use crate::telemetry::TelemetryConfig;

/// The HTTP server of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to bind.
    pub host: String,
    /// Port to bind (0 picks a free one).
    pub port: u16,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Seconds before a request is answered with 408.
    pub request_timeout_secs: u64,
    /// Seconds running requests get to finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Requests served at once; more are answered 503 at once (probes are never refused).
    pub max_in_flight: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8080,
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout_secs: 30,
            shutdown_grace_secs: 10,
            max_in_flight: 1024,
        }
    }
}

/// Settings every service shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// The HTTP server.
    #[serde(default)]
    pub http: HttpConfig,
    /// NATS JetStream.
    #[serde(default)]
    pub bus: BusConfig,
    /// The database.
    #[serde(default)]
    pub db: DbConfig,
    /// Artifact storage.
    #[serde(default)]
    pub artifacts: ArtifactsConfig,
    /// Logs and traces.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Authentication.
    #[serde(default)]
    pub auth: flywheel_auth::AuthConfig,
    /// Options of the service itself (`[service]` in the file, `FLYWHEEL__SERVICE__<KEY>` in
    /// the environment); each service documents its keys.
    #[serde(default)]
    pub service: std::collections::BTreeMap<String, String>,
}

impl ServiceSettings {
    /// The defaults of a service: its port and its own SQLite file under `.flywheel/`.
    pub fn defaults_for(service: &str, port: u16) -> Self {
        Self {
            http: HttpConfig {
                port,
                ..HttpConfig::default()
            },
            bus: BusConfig::default(),
            db: DbConfig {
                url: format!("sqlite://.flywheel/{service}.db"),
                ..DbConfig::default()
            },
            artifacts: ArtifactsConfig::default(),
            telemetry: TelemetryConfig::default(),
            auth: flywheel_auth::AuthConfig::default(),
            service: std::collections::BTreeMap::new(),
        }
    }

    /// The service option `key` parsed as `T`, or `default` when unset; the error names the key.
    pub fn option<T>(&self, key: &str, default: T) -> Result<T, ServiceError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        match self.service.get(key) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|e| {
                ServiceError::Config(format!("service.{key}: cannot use `{raw}`: {e}"))
            }),
        }
    }

    /// Checks every section; the message names the offending key and the expected form.
    pub fn validate(&self) -> Result<(), ServiceError> {
        self.auth.validate().map_err(ServiceError::Config)?;
        let http = &self.http;
        if http.host.parse::<std::net::IpAddr>().is_err() && http.host != "localhost" {
            return Err(ServiceError::Config(format!(
                "http.host: expected an IP address, got `{}`",
                http.host
            )));
        }
        if http.max_in_flight == 0 {
            return Err(ServiceError::Config(
                "http.max_in_flight: expected at least 1".into(),
            ));
        }
        if http.max_body_bytes == 0 {
            return Err(ServiceError::Config(
                "http.max_body_bytes: expected at least 1".into(),
            ));
        }
        if http.request_timeout_secs == 0 {
            return Err(ServiceError::Config(
                "http.request_timeout_secs: expected at least 1".into(),
            ));
        }
        self.bus.validate().map_err(ServiceError::Config)?;
        self.db.validate().map_err(ServiceError::Config)?;
        self.artifacts.validate().map_err(ServiceError::Config)?;
        self.telemetry.validate().map_err(ServiceError::Config)?;
        Ok(())
    }
}

/// Loads settings: `defaults`, overlaid by the TOML `file` (if given), overlaid by `FLYWHEEL__*`.
pub fn load_settings<T>(defaults: &T, file: Option<&Path>) -> Result<T, ServiceError>
where
    T: Serialize + DeserializeOwned,
{
    load_settings_from(defaults, file, std::env::vars())
}

/// [`load_settings`] with the environment given explicitly (for tests).
pub fn load_settings_from<T, I>(
    defaults: &T,
    file: Option<&Path>,
    env: I,
) -> Result<T, ServiceError>
where
    T: Serialize + DeserializeOwned,
    I: IntoIterator<Item = (String, String)>,
{
    let defaults = config::Config::try_from(defaults)
        .map_err(|e| ServiceError::Config(format!("defaults: {e}")))?;
    let mut builder = config::Config::builder().add_source(defaults);
    if let Some(file) = file {
        if !file.exists() {
            return Err(ServiceError::Config(format!(
                "config file {} does not exist",
                file.display()
            )));
        }
        builder = builder.add_source(
            config::File::from(file)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    let env: config::Map<String, String> = env
        .into_iter()
        .filter(|(key, _)| key.starts_with("FLYWHEEL__"))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("FLYWHEEL")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(env)),
    );
    let merged = builder
        .build()
        .map_err(|e| ServiceError::Config(e.to_string()))?;
    merged
        .try_deserialize()
        .map_err(|e| ServiceError::Config(explain(e)))
}

/// The config crate reports keys in its own words; make sure the key and expectation show.
fn explain(error: config::ConfigError) -> String {
    let text = error.to_string();
    text.replace("FLYWHEEL__", "env FLYWHEEL__")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("flywheel.toml");
        std::fs::write(
            &file,
            "[http]\nport = 9000\nhost = \"127.0.0.1\"\n[bus]\nprefix = \"fromfile\"\n",
        )
        .expect("write");
        let defaults = ServiceSettings::defaults_for("registry", 8080);
        let loaded = load_settings_from(
            &defaults,
            Some(&file),
            env(&[("FLYWHEEL__HTTP__PORT", "9100"), ("OTHER", "x")]),
        )
        .expect("load");
        assert_eq!(loaded.http.port, 9100, "env wins");
        assert_eq!(loaded.http.host, "127.0.0.1", "file beats defaults");
        assert_eq!(loaded.bus.prefix, "fromfile");
        assert_eq!(
            loaded.db.url, "sqlite://.flywheel/registry.db",
            "defaults stay"
        );
    }

    #[test]
    fn service_options_come_from_file_and_env_and_parse_typed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("flywheel.toml");
        std::fs::write(&file, "[service]\npool = \"gpu\"\nslots = 4\n").expect("write");
        let defaults = ServiceSettings::defaults_for("trainer-runner", 8082);
        let loaded = load_settings_from(
            &defaults,
            Some(&file),
            env(&[("FLYWHEEL__SERVICE__CPU", "2.5")]),
        )
        .expect("load");
        assert_eq!(loaded.option("pool", String::new()).expect("pool"), "gpu");
        assert_eq!(loaded.option("slots", 1u32).expect("slots"), 4);
        assert!((loaded.option("cpu", 1.0f64).expect("cpu") - 2.5).abs() < 1e-12);
        assert_eq!(loaded.option("absent", 7u32).expect("default"), 7);
        let err = loaded.option("pool", 1u32).expect_err("not a number");
        assert!(err.to_string().contains("service.pool"), "{err}");
    }

    #[test]
    fn nested_env_keys_reach_nested_sections() {
        let defaults = ServiceSettings::defaults_for("registry", 8080);
        let loaded = load_settings_from(
            &defaults,
            None,
            env(&[
                ("FLYWHEEL__ARTIFACTS__S3__ENDPOINT", "http://127.0.0.1:9000"),
                ("FLYWHEEL__DB__MAX_CONNECTIONS", "3"),
            ]),
        )
        .expect("load");
        assert_eq!(
            loaded.artifacts.s3.endpoint.as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(loaded.db.max_connections, 3);
    }

    #[test]
    fn bad_values_name_the_key_and_the_expected_form() {
        let defaults = ServiceSettings::defaults_for("registry", 8080);
        let err = load_settings_from(&defaults, None, env(&[("FLYWHEEL__HTTP__PORT", "eighty")]))
            .expect_err("must fail")
            .to_string();
        assert!(
            err.contains("http.port") && err.contains("integer"),
            "{err}"
        );

        let err = load_settings_from(&defaults, None, env(&[("FLYWHEEL__HTTP__PROT", "1")]))
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("prot"), "{err}");

        let mut settings = defaults;
        settings.bus.url = "localhost:4222".into();
        let err = settings.validate().expect_err("must fail").to_string();
        assert!(err.contains("bus.url") && err.contains("nats://"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let defaults = ServiceSettings::defaults_for("registry", 8080);
        let err = load_settings_from(
            &defaults,
            Some(Path::new("/nonexistent/flywheel.toml")),
            env(&[]),
        )
        .expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent/flywheel.toml"));
    }
}
