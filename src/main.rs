//! The `shardsync` command line.

fn main() {
    eprintln!("shardsync: under construction");
    std::process::exit(2);
}
