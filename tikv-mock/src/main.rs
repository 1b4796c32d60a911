//! The `tikv-mock` binary (being completed).

fn main() {}
