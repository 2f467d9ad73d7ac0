//! The SQL migrations are embedded at compile time (refinery's `embed_migrations!`), which
//! cargo does not see as an input: rebuild when one is added or changed.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
