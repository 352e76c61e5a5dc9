//! Flow table and analyzers.
