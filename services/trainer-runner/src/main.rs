//! `flywheel-trainer-runner`: see the crate docs.

fn main() -> std::process::ExitCode {
    flywheel_runtime::service_main(
        flywheel_trainer_runner::SERVICE,
        flywheel_trainer_runner::DEFAULT_PORT,
        flywheel_trainer_runner::run,
    )
}
