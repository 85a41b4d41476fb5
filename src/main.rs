//! The `kiln` binary: sets up logging and hands over to the library.
fn main() -> std::process::ExitCode {
    kiln::main()
}
