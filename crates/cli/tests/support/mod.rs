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

/// Starts `flywheel up <args>` and waits for it to print the registry's URL; the rest of its
/// output is read and dropped, so it never writes into a full pipe.
#[allow(dead_code)] // not every test binary that includes this module starts it this way
pub(crate) async fn start(
    args: &[&str],
    dir: &Path,
    bus: &flywheel_bus::BusConfig,
    env: &[(&str, &str)],
) -> anyhow::Result<(tokio::process::Child, String)> {
    use anyhow::Context;
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = up(args, dir, bus)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let registry = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.strip_prefix("registry") {
                return Ok::<_, anyhow::Error>(url.trim().to_owned());
            }
        }
        anyhow::bail!("flywheel up ended before printing its URLs")
    })
    .await
    .context("no registry URL within 60 s")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, registry))
}

/// Ctrl-C as a terminal sends it: SIGTERM, then a clean exit within 30 s.
pub(crate) async fn stop(child: tokio::process::Child) -> anyhow::Result<()> {
    flywheel_testkit::terminate(child, "flywheel up").await
}
