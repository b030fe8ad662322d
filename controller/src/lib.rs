//! The `ostium` process: configuration, sources, the rebuild-and-publish step, the admin server,
//! and the wiring ([`run`]) that runs them next to the proxy.

mod admin;
mod app;
mod args;
mod check;
mod events;
mod leader;
mod log_format;
mod metrics;
mod publish;
mod rebuild;
mod source;
mod status;
mod store;
mod workers;

pub use app::{LogGuard, init_logging, install_panic_hook, run, run_tool};
pub use args::{Args, Command, Config, ConfigError, LogFormat};
