//! Mergeable statistics.
