//! The migrations are embedded at compile time: adding one must rebuild the crate.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
