fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(sluice_destination_s3::main(&args));
}
