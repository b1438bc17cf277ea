//! Tests of the shared machinery: the prompt, the question sentinel, how a
//! run's end is decided, and the proxy itself over its unix socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn placeholder() {}
