//! The daemon's TOML configuration.

#[derive(Debug, thiserror::Error)]
#[error("config in progress")]
pub struct ConfigError;
