//! `cargo run -p xtask -- tidy`: the workspace checks, as a command.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool

use std::process::ExitCode;

fn main() -> ExitCode {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    if cmd != "tidy" {
        eprintln!("usage: cargo run -p xtask -- tidy");
        return ExitCode::from(2);
    }
    let root = xtask::repo_root();
    let mut problems = Vec::new();
    match std::fs::read_to_string(root.join("ARCHITECTURE.md")) {
        Ok(text) => problems.extend(
            xtask::architecture_paths(&root, &text)
                .into_iter()
                .map(|p| format!("ARCHITECTURE.md names {p}, which does not exist")),
        ),
        Err(e) => problems.push(format!("cannot read ARCHITECTURE.md: {e}")),
    }
    match xtask::cargo_metadata() {
        Ok(meta) => problems.extend(xtask::dependency_violations(&meta)),
        Err(e) => problems.push(e),
    }
    for p in &problems {
        println!("{p}");
    }
    if problems.is_empty() {
        println!("tidy: ok");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
