//! Starting `flywheel up` the way the CLI tests do: the binary, a temporary directory, free
//! ports, the test's NATS prefix, and SIGTERM to stop it.

use std::path::Path;

/// `flywheel up <args> --base-port 0 --dir <dir>` on the test's bus; stdio is the caller's.
pub(crate) fn up(
    args: &[&str],
    dir: &Path,
    bus: &flywheel_bus::BusConfig,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_flywheel"));
    command
        .arg("up")
        .args(args)
        .args(["--base-port", "0", "--dir"])
        .arg(dir)
        .env("FLYWHEEL__BUS__URL", &bus.url)
        .env("FLYWHEEL__BUS__PREFIX", &bus.prefix)
        .kill_on_drop(true);
    for kind in ["EVENTS", "PREDICTIONS", "DLQ", "JOBS"] {
        command.env(format!("FLYWHEEL__BUS__{kind}_MAX_AGE_SECS"), "3600");
    }
    command
}

/// Ctrl-C as a terminal sends it: SIGTERM, then a clean exit within 30 s.
pub(crate) async fn stop(child: tokio::process::Child) -> anyhow::Result<()> {
    flywheel_testkit::terminate(child, "flywheel up").await
}
