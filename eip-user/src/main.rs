fn main() {
    eprintln!("eip: the daemon and CLI are not built yet");
    std::process::exit(2);
}
