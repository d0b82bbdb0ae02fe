//! WSUS administration (placeholder while being written).
