//! NTFS access lists (placeholder while being written).
