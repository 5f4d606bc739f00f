//! Regenerates `proto/` from the event catalogue.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto"));
    match flywheel_events::schema::write_proto(&dir) {
        Ok(()) => {
            println!(
                "wrote {} files under {}",
                flywheel_events::schema::proto_files().len(),
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
