//! The service binary itself: bad configuration exits with code 2 and a message that names the
//! key and the expected form; `healthcheck` fails when nothing answers. (main.rs is shared by
//! every service through `flywheel_runtime::service_main`, so one binary covers them all.)

use std::process::Command;

fn registry() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flywheel-registry"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

#[test]
fn bad_config_names_the_key_and_expected_form() {
    let cases = [
        ("FLYWHEEL__HTTP__PORT", "eighty", "http.port"),
        (
            "FLYWHEEL__BUS__URL",
            "localhost:4222",
            "bus.url: expected nats://",
        ),
        (
            "FLYWHEEL__DB__URL",
            "mysql://x",
            "db.url: expected postgres://",
        ),
        (
            "FLYWHEEL__ARTIFACTS__URL",
            "ftp://x",
            "artifacts.url: expected file://",
        ),
        (
            "FLYWHEEL__TELEMETRY__LOG_FORMAT",
            "xml",
            "telemetry.log_format: expected `pretty` or `json`",
        ),
        ("FLYWHEEL__HTTP__NO_SUCH_KEY", "1", "no_such_key"),
    ];
    for (key, value, expected) in cases {
        let output = registry().env(key, value).output().expect("run the binary");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{key}={value}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{key}={value}: expected `{expected}` in: {stderr}"
        );
    }
}

#[test]
fn missing_config_file_and_unknown_arguments_are_refused() {
    let output = registry()
        .args(["--config", "/nonexistent/flywheel.toml"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/flywheel.toml"));
    let output = registry().arg("--frobnicate").output().expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage"));
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let output = registry()
        .arg("healthcheck")
        .env("FLYWHEEL__HTTP__PORT", port.to_string())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
}
