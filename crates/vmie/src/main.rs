//! vmie command-line tool.

fn main() {}
