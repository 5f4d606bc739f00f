//! `flywheel-scheduler`: see the crate docs.

fn main() -> std::process::ExitCode {
    flywheel_runtime::service_main(
        flywheel_scheduler::SERVICE,
        flywheel_scheduler::DEFAULT_PORT,
        flywheel_scheduler::run,
    )
}
