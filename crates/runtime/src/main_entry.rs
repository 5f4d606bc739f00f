//! The whole of every service binary's `main`: arguments, settings, telemetry, the listener,
//! signals, run, flush.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{ServiceResult, ServiceSettings};

const USAGE: &str = "usage: flywheel-<service> [--config <file.toml>] [healthcheck]

  --config <file>  TOML settings file (also FLYWHEEL_CONFIG); FLYWHEEL__SECTION__KEY variables win
  healthcheck      exit 0 when the running service answers /readyz (for container health checks)";

/// Runs a service binary: parse arguments, load and validate settings (exit 2 with a message
/// naming the key on error), start telemetry, bind, run until SIGTERM/ctrl-c, flush telemetry.
pub fn service_main<F, Fut>(service: &'static str, default_port: u16, run: F) -> ExitCode
where
    F: FnOnce(ServiceSettings, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = ServiceResult>,
{
    install_crypto_provider();
    let mut config_file = std::env::var_os("FLYWHEEL_CONFIG").map(PathBuf::from);
    let mut healthcheck = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(path) => config_file = Some(PathBuf::from(path)),
                None => return usage_error("--config needs a file"),
            },
            "healthcheck" => healthcheck = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument `{other}`")),
        }
    }
    let defaults = ServiceSettings::defaults_for(service, default_port);
    let settings = match crate::load_settings(&defaults, config_file.as_deref())
        .and_then(|s| s.validate().map(|()| s))
    {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("flywheel-{service}: invalid {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("flywheel-{service}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if healthcheck {
        return runtime.block_on(probe_health(settings.http.port));
    }
    runtime.block_on(async move {
        let guard = match crate::telemetry::init(&settings.telemetry, service) {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("flywheel-{service}: {e}");
                return ExitCode::from(2);
            }
        };
        let address = format!("{}:{}", settings.http.host, settings.http.port);
        let listener = match TcpListener::bind(&address).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!(
                    "flywheel-{service}: cannot listen on {address} (http.host/http.port): {e}"
                );
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(service, %address, "listening");
        let shutdown = crate::shutdown::on_signals();
        let outcome = run(settings, listener, shutdown).await;
        guard.shutdown().await;
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "service failed");
                eprintln!("flywheel-{service}: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Installs aws-lc-rs as the process's one TLS crypto provider, whatever a dependency turns on
/// (first thing in every binary's `main`).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("{message}\n{USAGE}");
    ExitCode::from(2)
}

/// A dependency-free HTTP/1.0 GET of /readyz, so container images need no curl.
async fn probe_health(port: u16) -> ExitCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await?;
        Ok::<bool, std::io::Error>(
            head[..n].starts_with(b"HTTP/1.1 200") || head[..n].starts_with(b"HTTP/1.0 200"),
        )
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), attempt).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
