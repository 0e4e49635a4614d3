//! The README's generated sections: each is made from the code it
//! documents, and this test fails when the README drifts from it.
//! `BLESS=1 cargo test -p countries-tests --test readme_tables` rewrites them.

use std::path::Path;
use std::sync::Mutex;

/// The tests run in parallel: with `BLESS=1` each rewrites the README, and
/// another must not read it half-written or write back what it read before.
static README: Mutex<()> = Mutex::new(());

/// Checks that the README's section between `<!-- NAME:start -->` and
/// `<!-- NAME:end -->` is `generated`; with `BLESS=1` it rewrites the
/// section instead.
fn assert_readme_section(name: &str, generated: &str, source: &str) {
    let _one_at_a_time = README
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md beside the workspace");
    let (start, end) = (
        format!("<!-- {name}:start -->\n"),
        format!("<!-- {name}:end -->"),
    );
    let from = readme.find(&start).expect("start marker") + start.len();
    let to = readme.find(&end).expect("end marker");
    if std::env::var_os("BLESS").is_some() {
        let updated = format!("{}{generated}{}", &readme[..from], &readme[to..]);
        std::fs::write(&path, updated).expect("writing README.md");
        return;
    }
    assert_eq!(
        &readme[from..to],
        generated,
        "the README's {name} section drifted from {source}: rerun with BLESS=1"
    );
}

#[test]
fn the_configuration_table_is_the_declared_variables() {
    assert_readme_section(
        "config-table",
        &countries_shared::config::vars::markdown_table(),
        "shared/src/config/vars.rs",
    );
}

#[test]
fn the_table_of_snowflake_codes_is_the_classification() {
    assert_readme_section(
        "snowflake-codes",
        &countries_snowflake::errors::markdown_table(),
        "shared/adapters/snowflake/src/errors.rs",
    );
}

#[test]
fn the_type_table_is_the_mapping() {
    assert_readme_section(
        "type-table",
        &countries_shared::model::types::markdown_table(),
        "shared/src/model/types.rs",
    );
}
