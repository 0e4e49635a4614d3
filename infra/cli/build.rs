//! Rebuilds the crate when a migration is added or changed:
//! `refinery::embed_migrations!` reads `infra/sql/postgres` while compiling,
//! and cargo would not otherwise know that a new file there matters.

fn main() {
    println!("cargo:rerun-if-changed=../sql/postgres");
}
