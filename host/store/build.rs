//! `sqlx::migrate!` embeds the files of `migrations/` at compile time, but
//! on stable Rust it cannot tell Cargo to rebuild when one is added or
//! changed: without this, a build reusing its target directory kept the
//! schema it was first built with (sqlx's documented remedy).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
