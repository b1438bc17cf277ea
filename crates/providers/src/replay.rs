//! The `replay` provider: plays scripted responses from a file.
