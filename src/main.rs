//! The `kferry` binary: parses arguments and hands over to [`kferry::cli`].

fn main() -> std::process::ExitCode {
    kferry::cli::main()
}
