//! Zero-copy header views (being written).
