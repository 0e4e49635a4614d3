//! A mapped table's run statements against the Snowflake emulator
//! (fakesnow's server mode), through the product's client: the snapshot
//! numbers the rows by key and keeps their hash, pages decode every column,
//! and the join delete takes exactly the safe rows: a newer version of a
//! key that arrived after the snapshot survives, identical copies go
//! together, a row with a NULL key goes only by the NULL-safe statement,
//! and a second delete of the same ranges takes nothing.

use std::time::Duration;

use countries_shared::deadline::Deadline;
use countries_shared::model::value::{Decimal, TablePage, Value};
use countries_shared::ports::{IdMatch, TableSource as _};
use countries_snowflake::discovery::TableName;
use countries_snowflake::mapped::sql::MappedTable;
use snowflake_api::QueryResult;
use testkit::TestEnv;
use uuid::Uuid;

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn amount(unscaled: i128) -> Value {
    Value::Decimal(Decimal::new(unscaled, 2).expect("a decimal"))
}

#[tokio::test]
async fn a_snapshot_reads_by_key_and_deletes_exactly_what_it_copied() {
    let env = TestEnv::new("sf_mapped").await;
    let admin = env.admin();
    admin
        .execute(
            "CREATE TABLE ORDERS (REGION VARCHAR, ORDER_NO NUMBER(18,0), AMOUNT NUMBER(12,2), \
             NOTE VARCHAR)",
        )
        .await
        .expect("the table");
    admin
        .execute(
            "INSERT INTO ORDERS VALUES ('us', 2, 2.00, 'y'), ('eu', 1, 10.50, 'a'), \
             (NULL, 5, 1.00, 'no key'), ('eu', 2, 3.00, NULL), ('eu', 1, 10.50, 'a'), \
             ('us', 1, 1.00, 'x')",
        )
        .await
        .expect("rows");
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let table = MappedTable::new(
        &TableName {
            database: None,
            schema: Some("PUBLIC"),
            table: "ORDERS",
        },
        &names(&["REGION", "ORDER_NO"]),
        &names(&["REGION", "ORDER_NO", "AMOUNT", "NOTE"]),
    );
    let source = env.source();
    let mapped = source.mapped(table);
    let deadline = Deadline::after(Duration::from_secs(60), Duration::ZERO);
    let snapshot = mapped
        .snapshot(Uuid::new_v4(), 100, &deadline)
        .await
        .expect("the snapshot");

    let first = snapshot.read(1..=4).await.expect("a page");
    let rest = snapshot.read(5..=8).await.expect("the last page");
    assert_eq!((first.len(), rest.len()), (4, 2));
    // Decoded a chunk at a time, as the run does: chunks of 3 and 1 rows.
    let (a, b, rest) = (first.decode(0..3), first.decode(3..4), rest.decode(0..2));
    let pages = [&a, &b, &rest];
    let rows: Vec<(&TablePage, usize)> = pages
        .iter()
        .flat_map(|p| (0..p.len()).map(move |i| (*p, i)))
        .collect();
    let numbers: Vec<u64> = rows.iter().map(|(p, i)| p.number(*i)).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6], "numbered without gaps");
    assert!(
        rows.iter().all(|(p, i)| p.unread(*i).count() == 0),
        "every value read"
    );
    let values: Vec<Vec<Value>> = rows.iter().map(|(p, i)| p.row(*i).to_vec()).collect();
    assert_eq!(
        values[2],
        [text("eu"), Value::Int(2), amount(300), Value::Null],
        "by key: the versions of a key together, NULL keys last"
    );
    assert_eq!(values[0], values[1], "identical copies side by side");
    assert_eq!(values[5][0], Value::Null);
    let key_null: Vec<bool> = rows.iter().map(|(p, i)| p.key_null(*i, &[0, 1])).collect();
    assert_eq!(key_null, [false, false, false, false, false, true]);

    // A newer version of a copied key arrives while the run works.
    admin
        .execute("INSERT INTO ORDERS VALUES ('eu', 2, 4.00, 'newer')")
        .await
        .expect("a newer version");

    assert_eq!(
        snapshot
            .delete(&[6..=6], IdMatch::Equal)
            .await
            .expect("delete"),
        0,
        "a NULL key never matches by ="
    );
    assert_eq!(
        snapshot
            .delete(&[1..=5], IdMatch::Equal)
            .await
            .expect("delete"),
        5,
        "both identical copies, and every other copied row"
    );
    assert_eq!(
        snapshot
            .delete(&[6..=6], IdMatch::BothNull)
            .await
            .expect("delete"),
        1
    );
    assert_eq!(
        snapshot
            .delete(&[1..=6], IdMatch::Equal)
            .await
            .expect("delete"),
        0,
        "safe to run twice"
    );
    snapshot.drop_snapshot().await.expect("drop");
    snapshot.drop_snapshot().await.expect("drop twice");

    let rows_of = |sql: &'static str| {
        let admin = &admin;
        async move {
            match admin.execute(sql).await.expect("a select") {
                QueryResult::Arrow(batches) => batches.iter().map(|b| b.num_rows()).sum(),
                _ => 0usize,
            }
        }
    };
    assert_eq!(rows_of("SELECT NOTE FROM ORDERS").await, 1);
    assert_eq!(
        rows_of("SELECT NOTE FROM ORDERS WHERE NOTE = 'newer' AND AMOUNT = 4").await,
        1,
        "only the newer version survives"
    );
}
