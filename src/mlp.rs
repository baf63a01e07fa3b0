//! Reference ReLU MLP (placeholder: being written).
