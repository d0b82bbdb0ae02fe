//! The `medic` command: parses arguments and hands over to the library.

fn main() -> std::process::ExitCode {
    medic::cli::main()
}
