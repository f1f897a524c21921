fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(sluice_orchestrator::cli::main_with(&args, "bookkeeper", sluice_bookkeeper::run));
}
