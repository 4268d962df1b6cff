//! `hie-gateway`: see `hie-gateway --help`.

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
