//! The agent's integration suites, one module each, in one test binary (linked once).
//! Run one suite with `cargo test -p infrastructor-agent --test agent <suite>::`.

mod change_crash;
