//! Reading and writing checkpoints (placeholder: being written).
