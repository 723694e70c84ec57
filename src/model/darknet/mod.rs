//! Darknet's own model files: the `.cfg` network description and the `.weights` blob.

#[derive(Debug, thiserror::Error)]
pub enum DarknetError {
    #[error("darknet support is in progress")]
    Todo,
}
