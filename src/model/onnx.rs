//! ONNX models on tract.

/// An optimised tract plan.
pub type Plan = std::sync::Arc<tract_onnx::prelude::TypedRunnableModel>;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("onnx support is in progress")]
    Todo,
}
