//! The ten-column sample table `orders`, for the tests that run a mapped
//! table beside `case`: its definition on both sides, the mapping file that
//! names it, seeded datasets, and its rows read back in one shape from
//! Snowflake, Postgres and the retry queue, so that a test can check that
//! no row was lost and no version written twice.
//!
//! A drawn row varies in its key (`REGION`, `ORDER_NO`), `AMOUNT` and
//! `NOTE`; the other six columns hold one value of each remaining type
//! (float, boolean, date, nanosecond timestamp, variant, binary).

use std::collections::HashMap;
use std::path::PathBuf;

use arrow_array::cast::AsArray;
use arrow_array::Array;
use countries_shared::model::mapped_message::MappedRetryMessage;
use serde_json::Value as Json;
use snowflake_api::QueryResult;

use crate::{SplitMix, TestEnv};

pub const SNOWFLAKE_ORDERS: &str = "CREATE TABLE ORDERS (REGION VARCHAR, ORDER_NO NUMBER(18,0), \
    AMOUNT NUMBER(38,9), RATE FLOAT, NOTE VARCHAR, PAID BOOLEAN, SHIPPED_ON DATE, \
    PLACED_AT TIMESTAMP_NTZ, PAYLOAD VARIANT, SIGNATURE BINARY)";

/// `note` is `varchar(5)`: a longer note is a row Postgres refuses.
pub const POSTGRES_ORDERS: &str = "CREATE TABLE orders (region text, order_no bigint, \
    amount numeric, rate double precision, note varchar(5), paid boolean, shipped_on date, \
    placed_at timestamp, payload jsonb, signature bytea, PRIMARY KEY (region, order_no))";

/// A note Postgres refuses (longer than `varchar(5)`).
pub const REFUSED_NOTE: &str = "too long";

/// The mapping file naming `orders`, as a deployment ships it; written
/// beside the test's other files.
pub fn tables_file(env: &TestEnv) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}-tables.toml", env.name));
    std::fs::write(
        &path,
        "[[tables]]\nname = \"orders\"\nsource = { schema = \"PUBLIC\", table = \"ORDERS\" }\n\
         target = { schema = \"public\", table = \"orders\" }\nconsume = \"delete\"\n",
    )
    .expect("the mapping file");
    path
}

/// One row of `orders`, as far as the checks tell rows apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Order {
    pub region: Option<String>,
    pub order_no: Option<i64>,
    pub amount: i64,
    pub note: Option<String>,
}

impl Order {
    /// Whether Postgres takes it: a whole key and a note that fits.
    pub fn valid(&self) -> bool {
        self.region.is_some()
            && self.order_no.is_some()
            && self.note.as_deref().is_none_or(|n| n.chars().count() <= 5)
    }

    fn key(&self) -> (Option<String>, Option<i64>) {
        (self.region.clone(), self.order_no)
    }

    /// The row as a Snowflake `SELECT` of literals.
    fn select(&self) -> String {
        let text = |t: &Option<String>| t.as_ref().map_or("NULL".into(), |t| format!("'{t}'"));
        let no = self.order_no.map_or("NULL".into(), |n| n.to_string());
        format!(
            "SELECT {}, {no}, {}, 1.5::FLOAT, {}, TRUE, '2026-12-03'::DATE, \
             '2026-12-03 10:00:00.123456789'::TIMESTAMP_NTZ, PARSE_JSON('{{\"a\":[1,2]}}'), \
             TO_BINARY('00FF', 'HEX')",
            text(&self.region),
            self.amount,
            text(&self.note),
        )
    }

    /// The row a version-2 retry message carries, if it is an `orders` row.
    pub fn from_message(message: &MappedRetryMessage) -> Option<Order> {
        if message.table != "orders" {
            return None;
        }
        let text = |name: &str| {
            message
                .row
                .get(name)
                .and_then(Json::as_str)
                .map(String::from)
        };
        let amount = match message.row.get("AMOUNT") {
            Some(Json::Object(tagged)) => tagged.get("decimal").and_then(Json::as_str)?,
            _ => return None,
        };
        Some(Order {
            region: text("REGION"),
            order_no: message.row.get("ORDER_NO").and_then(Json::as_i64),
            amount: whole(amount)?,
            note: text("NOTE"),
        })
    }
}

/// A whole number written as a decimal (`12.000000000`).
fn whole(text: &str) -> Option<i64> {
    text.parse::<f64>().ok().map(|f| f as i64)
}

/// A dataset of `count` rows: valid rows, a NULL key (a row-level failure
/// before the write), notes Postgres refuses, NULL notes, identical copies
/// and later versions of earlier keys (each version's amount is its own).
pub fn draw_orders(rng: &mut SplitMix, count: usize) -> Vec<Order> {
    const REGIONS: [&str; 2] = ["eu", "us"];
    const NOTES: [&str; 4] = ["a", "b", "ccc", "ddddd"];
    let mut rows: Vec<Order> = Vec::with_capacity(count);
    for n in 1..=count as i64 {
        let fresh = Order {
            region: Some(REGIONS[rng.below(2)].into()),
            order_no: Some(n),
            amount: n * 10,
            note: Some(NOTES[rng.below(NOTES.len())].into()),
        };
        let row = match rng.below(10) {
            0 => Order {
                region: None,
                ..fresh
            },
            1 => Order {
                note: Some(REFUSED_NOTE.into()),
                ..fresh
            },
            2 => Order {
                note: None,
                ..fresh
            },
            3 if !rows.is_empty() => {
                let earlier = rows[rng.below(rows.len())].clone();
                if rng.below(2) == 0 {
                    earlier
                } else {
                    Order {
                        amount: n * 10 + 1,
                        ..earlier
                    }
                }
            }
            _ => fresh,
        };
        rows.push(row);
    }
    rows
}

/// Creates `orders` on both sides, and makes Postgres record every change
/// it commits to it, in order, in `orders_changes`.
pub async fn create_orders(env: &TestEnv) {
    env.admin()
        .execute(SNOWFLAKE_ORDERS)
        .await
        .expect("the Snowflake table");
    env.postgres()
        .await
        .batch_execute(&format!(
            r#"
            {POSTGRES_ORDERS};
            CREATE TABLE orders_changes (seq bigserial PRIMARY KEY, region text,
                order_no bigint, amount numeric, note text);
            CREATE FUNCTION record_orders_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO orders_changes (region, order_no, amount, note)
                    VALUES (NEW.region, NEW.order_no, NEW.amount, NEW.note);
                RETURN NEW;
            END $$;
            CREATE TRIGGER record_orders_change AFTER INSERT OR UPDATE ON orders
                FOR EACH ROW EXECUTE FUNCTION record_orders_change();
            "#
        ))
        .await
        .expect("the Postgres table");
}

pub async fn load_orders(env: &TestEnv, rows: &[Order]) {
    for chunk in rows.chunks(200) {
        let selects: Vec<String> = chunk.iter().map(Order::select).collect();
        env.admin()
            .execute(&format!(
                "INSERT INTO ORDERS {}",
                selects.join(" UNION ALL ")
            ))
            .await
            .expect("loading orders into Snowflake");
    }
}

/// Every row left in Snowflake's `ORDERS`, sorted.
pub async fn snowflake_orders(env: &TestEnv) -> Vec<Order> {
    let result = env
        .admin()
        .execute(
            "SELECT REGION, CAST(ORDER_NO AS VARCHAR), CAST(AMOUNT AS VARCHAR), NOTE FROM ORDERS",
        )
        .await
        .expect("reading ORDERS");
    let batches = match result {
        QueryResult::Empty => return Vec::new(),
        QueryResult::Arrow(batches) => batches,
        QueryResult::Json(json) => panic!("expected Arrow rows, got {}", json.value),
    };
    let mut rows = Vec::new();
    for batch in batches {
        let columns: Vec<_> = (0..4)
            .map(|i| {
                batch
                    .column(i)
                    .as_string_opt::<i32>()
                    .expect("text columns")
            })
            .collect();
        let text = |c: usize, r: usize| (!columns[c].is_null(r)).then(|| columns[c].value(r));
        for r in 0..batch.num_rows() {
            rows.push(Order {
                region: text(0, r).map(String::from),
                order_no: text(1, r).map(|n| n.parse().expect("an order number")),
                amount: text(2, r).and_then(whole).expect("an amount"),
                note: text(3, r).map(String::from),
            });
        }
    }
    rows.sort();
    rows
}

/// The Postgres table's rows, by key.
pub async fn postgres_orders(env: &TestEnv) -> HashMap<(Option<String>, Option<i64>), Order> {
    env.postgres()
        .await
        .query(
            "SELECT region, order_no, amount::text, note FROM orders",
            &[],
        )
        .await
        .expect("reading Postgres orders")
        .iter()
        .map(|r| {
            let order = Order {
                region: r.get(0),
                order_no: r.get(1),
                amount: whole(r.get(2)).expect("an amount"),
                note: r.get(3),
            };
            (order.key(), order)
        })
        .collect()
}

/// The drawn rows that are nowhere: not in Snowflake, not queued, and not
/// committed by Postgres (its change log holds every version it wrote, so a
/// version deleted without ever being written shows, even when its key
/// holds another).
pub async fn lost_orders(env: &TestEnv, original: &[Order], queued: &[Order]) -> Vec<String> {
    let in_snowflake = snowflake_orders(env).await;
    let committed = committed_orders(env).await;
    original
        .iter()
        .filter(|row| !in_snowflake.contains(row) && !queued.contains(row))
        .filter(|row| !(row.valid() && committed.contains(row)))
        .map(|row| format!("{row:?}"))
        .collect()
}

/// Every version Postgres committed to `orders`, in order.
async fn committed_orders(env: &TestEnv) -> Vec<Order> {
    env.postgres()
        .await
        .query(
            "SELECT region, order_no, amount::text, note FROM orders_changes ORDER BY seq",
            &[],
        )
        .await
        .expect("reading orders_changes")
        .iter()
        .map(|r| Order {
            region: r.get(0),
            order_no: r.get(1),
            amount: whole(r.get(2)).expect("an amount"),
            note: r.get(3),
        })
        .collect()
}

/// Versions Postgres committed more than once for a key.
pub async fn orders_written_twice(env: &TestEnv) -> Vec<String> {
    let changes = env
        .postgres()
        .await
        .query(
            "SELECT region, order_no, amount::text, note FROM orders_changes ORDER BY seq",
            &[],
        )
        .await
        .expect("reading orders_changes");
    let mut seen: HashMap<(String, i64, String, Option<String>), usize> = HashMap::new();
    for row in changes {
        *seen
            .entry((row.get(0), row.get(1), row.get(2), row.get(3)))
            .or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(version, n)| format!("orders {version:?} written {n} times"))
        .collect()
}
