#![allow(clippy::unwrap_used)]
mod support;
