//! The write stage of a mapped table for `make bench` (infra/local/bench_tables.py):
//! the demo's eleven-column `orders` table (infra/local/demo/orders.postgres.sql),
//! N generated rows. Each subcommand prints one JSON object with the seconds it took.
//!
//!   bench-table copy N   binary COPY of the rows straight into the empty table (the limit)
//!   bench-table ours N   the table run's write stage into the empty table: chunks of
//!                        BATCH_SIZE through the isolating writer (COPY first, staged upsert)
//!
//! It reads the `PG*` variables and `BATCH_SIZE`.

use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime};
use countries_postgres::connect::connect;
use countries_postgres::mapped::pg_type;
use countries_postgres::mapped::{MappedTarget, MappedWriter, TargetColumnType};
use countries_postgres::values::PgValue;
use countries_shared::config::PostgresConfig;
use countries_shared::deadline::Deadline;
use countries_shared::model::ident::Identifier;
use countries_shared::model::types::TargetType;
use countries_shared::model::value::{Decimal, Value};
use countries_shared::ports::WriteLimits;
use countries_shared::retry::RetryPolicy;
use countries_shared::sink::isolate::write_isolating;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::ToSql;

type Failure = Box<dyn std::error::Error>;

const COLUMNS: [(&str, TargetType, bool); 11] = [
    ("region", TargetType::Text, true),
    ("order_no", TargetType::Bigint, true),
    ("amount", TargetType::Numeric, false),
    ("rate", TargetType::Double, false),
    ("note", TargetType::Varchar, false),
    ("paid", TargetType::Boolean, false),
    ("shipped_on", TargetType::Date, false),
    ("placed_at", TargetType::Timestamp, false),
    ("payload", TargetType::Jsonb, false),
    ("signature", TargetType::Bytea, false),
    ("qty", TargetType::Smallint, false),
];

/// The rows the benchmark's Snowflake generator makes, as the decoder
/// hands them over.
fn rows(n: usize) -> Result<Vec<Vec<Value>>, Failure> {
    const REGIONS: [&str; 4] = ["eu", "us", "ap", "sa"];
    let day0 = NaiveDate::from_ymd_opt(2026, 1, 1).ok_or("a date")?;
    let placed =
        NaiveDateTime::parse_from_str("2026-01-01 00:00:00.123456789", "%Y-%m-%d %H:%M:%S%.f")?;
    (0..n)
        .map(|i| {
            let amount = Decimal::new(i as i128 * 100 + 37, 2).ok_or("a decimal")?;
            Ok(vec![
                Value::Text(REGIONS[i % 4].into()),
                Value::Int(i as i64),
                Value::Decimal(amount),
                Value::Float(i as f64 * 0.5),
                Value::Text(format!("note {}", i % 1000).as_str().into()),
                Value::Bool(i % 2 == 0),
                Value::Date(day0 + chrono::Days::new((i % 365) as u64)),
                Value::Timestamp(placed),
                Value::Json(format!("{{\"i\":{i}}}")),
                Value::Bytes(vec![0, 255]),
                Value::Int((i % 100) as i64),
            ])
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, n) = match args.as_slice() {
        [mode, n] => (mode.as_str(), n.parse::<usize>()?),
        _ => return Err("usage: bench-table copy|ours N".into()),
    };
    let batch: usize = std::env::var("BATCH_SIZE")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(50_000);
    let config = PostgresConfig::from_env()?;
    let mut admin = connect(&config).await?;
    let data = rows(n)?;
    admin.client.batch_execute("TRUNCATE orders").await?;
    admin.client.batch_execute("VACUUM ANALYZE orders").await?;
    let columns: Vec<TargetColumnType> = COLUMNS
        .iter()
        .map(|(name, ty, key)| TargetColumnType {
            name: name.to_string(),
            ty: *ty,
            key: *key,
        })
        .collect();
    let start = Instant::now();
    let changed = match mode {
        "copy" => {
            let list: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
            let sink = admin
                .client
                .copy_in(&format!(
                    "COPY orders ({}) FROM STDIN (FORMAT binary)",
                    list.join(", ")
                ))
                .await?;
            let types: Vec<_> = COLUMNS.iter().map(|c| pg_type(c.1)).collect();
            let writer = BinaryCopyInWriter::new(sink, &types);
            futures::pin_mut!(writer);
            for row in &data {
                let values: Vec<PgValue<'_>> = row.iter().map(PgValue).collect();
                let refs: Vec<&(dyn ToSql + Sync)> =
                    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                writer.as_mut().write(&refs).await?;
            }
            writer.finish().await?
        }
        "ours" => {
            let ident = |s: &str| Identifier::parse(s).map_err(|e| e.to_string());
            let target = MappedTarget::of_columns(&ident("public")?, &ident("orders")?, &columns);
            let mut writer = MappedWriter::new(&mut admin.client, &target);
            let limits = WriteLimits {
                failure_budget: 1_000,
                policy: RetryPolicy::new(3),
            };
            let deadline = Deadline::after(Duration::from_secs(3_600), Duration::ZERO);
            let mut changed = 0;
            for chunk in data.chunks(batch.max(1)) {
                let refs: Vec<&[Value]> = chunk.iter().map(Vec::as_slice).collect();
                let outcome = write_isolating(&mut writer, &refs, limits, &deadline).await;
                if outcome.written.len() != chunk.len() {
                    return Err(format!("not all written: {:?}", outcome.stop).into());
                }
                changed += outcome.changed;
            }
            changed
        }
        other => return Err(format!("unknown mode {other}").into()),
    };
    let seconds = start.elapsed().as_secs_f64();
    if changed != n as u64 {
        return Err(format!("{changed} rows written, expected {n}").into());
    }
    println!("{{\"mode\":\"{mode}\",\"rows\":{n},\"seconds\":{seconds}}}");
    Ok(())
}
