//! Linear assignment (placeholder: being written).
