//! `flywheel-trainer-runner`: see the crate docs. `flywheel-trainer-runner attempt` runs one
//! attempt inside a Kubernetes pod (the `kubernetes` backend's Jobs).

fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("attempt") {
        return flywheel_trainer_runner::attempt_main();
    }
    flywheel_runtime::service_main(
        flywheel_trainer_runner::SERVICE,
        flywheel_trainer_runner::DEFAULT_PORT,
        flywheel_trainer_runner::run,
    )
}
