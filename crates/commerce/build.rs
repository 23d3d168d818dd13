//! `sqlx::migrate!` embeds the migrations at compile time but cannot tell cargo about a
//! file added to the directory; without this, a new migration is silently left out of
//! the binary until something else in the crate changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
