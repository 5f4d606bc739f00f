//! `flywheel-monitor`: see the crate docs.

fn main() -> std::process::ExitCode {
    flywheel_runtime::service_main(
        flywheel_monitor::SERVICE,
        flywheel_monitor::DEFAULT_PORT,
        flywheel_monitor::run,
    )
}
