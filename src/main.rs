fn main() -> std::process::ExitCode {
    edgedet::cli::main()
}
