//! The host operations' integration suites, one module each, in one test binary (linked once).
//! Run one suite with `cargo test -p infrastructor-hostops --test hostops <suite>::`.

mod change_engine;
mod database_drills;
mod parsers;
mod restic;
