//! `flywheel-registry`: see the crate docs.

fn main() -> std::process::ExitCode {
    flywheel_runtime::service_main(
        flywheel_registry::SERVICE,
        flywheel_registry::DEFAULT_PORT,
        flywheel_registry::run,
    )
}
