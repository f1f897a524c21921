/// mimalloc, as in the `sluice` binary that runs the same code as a local
/// process: the relay allocates per line, and a container should run the
/// program a local task runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(sluice_orchestrator::cli::main(&args));
}
