//! The no-isolation backend.
