//! `flywheel-deployer`: see the crate docs.

fn main() -> std::process::ExitCode {
    flywheel_runtime::service_main(
        flywheel_deployer::SERVICE,
        flywheel_deployer::DEFAULT_PORT,
        flywheel_deployer::run,
    )
}
