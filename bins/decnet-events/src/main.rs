//! The decnet-events server (arrives with the end-to-end service issue).

fn main() {}
