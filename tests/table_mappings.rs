//! A table mapping file checked against the real services (`countries
//! tables`): the source's columns read by `DESCRIBE TABLE` from the
//! Snowflake emulator, the target's from PostgreSQL 15's catalog, and each
//! table's column plan made, or every problem listed with its table and
//! column, one table's problems never hiding another's plan.

use std::time::Duration;

use countries_ops::tables::{check_tables, render};
use countries_shared::config::tables::parse_tables;
use countries_shared::deadline::Deadline;
use countries_shared::model::types::TargetType;
use testkit::TestEnv;

/// Eleven columns of the mapped types, with a composite key.
const SNOWFLAKE_ORDERS: &str = "CREATE TABLE ORDERS (REGION VARCHAR, ORDER_NO NUMBER(18,0), \
    AMOUNT NUMBER(38,9), RATE FLOAT, PLACED_AT TIMESTAMP_TZ, SHIPPED_ON DATE, AT_TIME TIME, \
    PAYLOAD VARIANT, SIGNATURE BINARY, NOTE VARCHAR(40), PAID BOOLEAN, CREATED TIMESTAMP_NTZ)";

const POSTGRES_ORDERS: &str = "CREATE TABLE orders (region text, order_no bigint, \
    amount numeric, rate double precision, placed_at timestamptz, shipped_on date, \
    at_time time, payload jsonb, signature bytea, note varchar(40), paid boolean, \
    created timestamp, PRIMARY KEY (region, order_no))";

fn mapping_file(database: &str, orders_extra: &str) -> String {
    format!(
        r#"
[[tables]]
name = "countries"
source = {{ database = "{database}", schema = "PUBLIC", table = "countries" }}
target = {{ schema = "public", table = "countries" }}
consume = "delete"
rules = {{ country = "country_code" }}

[[tables]]
name = "orders"
source = {{ schema = "PUBLIC", table = "ORDERS" }}
target = {{ schema = "public", table = "orders" }}
consume = "delete"
{orders_extra}
"#
    )
}

/// `case`'s shape under another name on both sides (the file may not hold
/// `case` itself, which the variables configure).
async fn countries_tables(env: &TestEnv, pg: &tokio_postgres::Client) {
    env.admin()
        .execute("CREATE TABLE \"countries\" (COUNTRY_ID NUMBER(38,0), COUNTRY VARCHAR)")
        .await
        .expect("the Snowflake table");
    pg.batch_execute(
        "CREATE TABLE countries (country_id integer PRIMARY KEY, country varchar(3) NOT NULL)",
    )
    .await
    .expect("the Postgres table");
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(60), Duration::ZERO)
}

#[tokio::test]
async fn two_tables_are_planned_from_both_catalogs() {
    let env = TestEnv::new("tables_ok").await;
    env.admin()
        .execute(SNOWFLAKE_ORDERS)
        .await
        .expect("the Snowflake table");
    let pg = env.postgres().await;
    countries_tables(&env, &pg).await;
    pg.batch_execute(POSTGRES_ORDERS)
        .await
        .expect("the Postgres table");
    let database = env.vars["SNOWFLAKE_DATABASE"].clone();
    let mappings = parse_tables(&mapping_file(&database, ""), "tables.toml").expect("valid file");

    let checked = check_tables(&mappings, &env.source(), &pg, &deadline()).await;

    assert_eq!(checked.len(), 2);
    let case = checked[0].plan.as_ref().expect("countries is planned");
    let names: Vec<(&str, &str, bool)> = case
        .iter()
        .map(|c| (c.source.as_str(), c.target.as_str(), c.key))
        .collect();
    assert!(
        names.contains(&("COUNTRY_ID", "country_id", true))
            && names.contains(&("COUNTRY", "country", false)),
        "{names:?}"
    );
    let orders = checked[1]
        .plan
        .as_ref()
        .unwrap_or_else(|p| panic!("{p:#?}"));
    assert_eq!(orders.len(), 12);
    let keys: Vec<&str> = orders
        .iter()
        .filter(|c| c.key)
        .map(|c| c.target.as_str())
        .collect();
    assert_eq!(keys, ["region", "order_no"], "the primary key, in order");
    let by_target = |name: &str| {
        orders
            .iter()
            .find(|c| c.target == name)
            .unwrap_or_else(|| panic!("{name} planned"))
    };
    assert_eq!(by_target("amount").target_type, TargetType::Numeric);
    assert_eq!(by_target("placed_at").target_type, TargetType::Timestamptz);
    assert!(by_target("placed_at")
        .mapping
        .kept
        .contains("offset is not kept"));
    assert_eq!(by_target("payload").target_type, TargetType::Jsonb);
    assert_eq!(by_target("signature").target_type, TargetType::Bytea);
    assert_eq!(by_target("note").target_type, TargetType::Varchar);
    let printed = render(&checked);
    assert!(
        printed.contains("  AMOUNT -> amount (numeric): exact, all 38 digits and the scale"),
        "{printed}"
    );
    assert!(
        printed.contains(
            "  COUNTRY -> country (varchar(n)): exact; refused: a NUL character; a value longer than n; \
             rule country_code: trimmed and upper-cased, then three letters A-Z, or the row is refused (invalid)"
        ),
        "{printed}"
    );
    assert!(!printed.contains("problem"), "{printed}");
}

#[tokio::test]
async fn every_problem_is_named_and_a_good_table_is_still_planned() {
    let env = TestEnv::new("tables_bad").await;
    env.admin()
        .execute(SNOWFLAKE_ORDERS)
        .await
        .expect("the Snowflake table");
    let pg = env.postgres().await;
    countries_tables(&env, &pg).await;
    // No primary key, a column of a type that cannot take a float, and a
    // NOT NULL column nothing fills.
    pg.batch_execute(
        "CREATE TABLE orders (region text, order_no bigint, rate integer, \
         audited_by text NOT NULL)",
    )
    .await
    .expect("the Postgres table");
    let database = env.vars["SNOWFLAKE_DATABASE"].clone();
    let text = mapping_file(&database, "").replace(
        "table = \"countries\" }\ntarget",
        "table = \"gone\" }\ntarget",
    );
    let mappings = parse_tables(&text, "tables.toml").expect("valid file");

    let checked = check_tables(&mappings, &env.source(), &pg, &deadline()).await;

    let missing = checked[0].plan.as_ref().expect_err("no source table");
    assert!(
        missing[0].starts_with("table countries: source \"")
            && missing[0].contains("\"gone\"")
            && missing[0].contains("not found"),
        "{missing:?}"
    );
    let problems = checked[1]
        .plan
        .as_ref()
        .expect_err("orders cannot be planned");
    for expected in [
        "table orders: no key",
        "table orders: column rate: Real cannot go into a column of type integer",
        "table orders: column audited_by is NOT NULL without a default",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected} in {problems:#?}"
        );
    }
    let printed = render(&checked);
    assert!(
        printed.contains("  problem: table orders: no key"),
        "{printed}"
    );

    // The same file with the source table fixed plans `countries` again while
    // `orders` keeps its problems.
    let mappings = parse_tables(&mapping_file(&database, ""), "tables.toml").expect("valid file");
    let checked = check_tables(&mappings, &env.source(), &pg, &deadline()).await;
    assert!(checked[0].plan.is_ok(), "{:?}", checked[0].plan);
    assert!(checked[1].plan.is_err());
}
