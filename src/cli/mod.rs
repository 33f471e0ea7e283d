//! Command line interface definition (clap) of `s3sync`.

pub mod args;
pub mod size;

pub use args::CliArgs;
pub mod to_config;
