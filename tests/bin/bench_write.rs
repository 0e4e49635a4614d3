//! Postgres write-stage measurements for `make bench` (infra/local/bench.py).
//! Each subcommand prints one JSON object with the seconds it took.
//!
//!   bench-write copy N          binary COPY of N rows into an empty table (the limit)
//!   bench-write ours N          our write stage (COPY first, upsert fallback) into an empty table
//!   bench-write ours-replay N   our write stage when every row already exists
//!   bench-write unnest-replay N a plain UNNEST … ON CONFLICT DO UPDATE of the same rows (replay baseline)
//!
//! It reads the `PG*` variables and `BATCH_SIZE`, and uses the table "case".

use std::time::Instant;

use countries_shared::config::PostgresConfig;
use countries_shared::model::row::{validate, CountryRow, SourceRow};
use countries_shared::ports::RowWriter;
use countries_shared::postgres::connect::connect;
use countries_shared::postgres::replica::PostgresStore;
use tokio_postgres::types::Type;

type Failure = Box<dyn std::error::Error>;

fn rows(n: usize) -> Vec<CountryRow> {
    const CODES: [&str; 8] = ["USA", "FRA", "DEU", "BRA", "IND", "JPN", "NGA", "AUS"];
    (0..n)
        .filter_map(|i| {
            validate(&SourceRow::new(
                Some(i as i128),
                Some(CODES[i % CODES.len()]),
            ))
            .ok()
        })
        .collect()
}

async fn truncate(client: &tokio_postgres::Client) -> Result<(), Failure> {
    // Two calls: several statements in one call share an implicit
    // transaction, and VACUUM refuses to run inside one.
    client.batch_execute(r#"TRUNCATE "case""#).await?;
    client.batch_execute(r#"VACUUM ANALYZE "case""#).await?;
    Ok(())
}

async fn copy_all(client: &tokio_postgres::Client, rows: &[CountryRow]) -> Result<u64, Failure> {
    let sink = client
        .copy_in(r#"COPY "case" (country_id, country) FROM STDIN (FORMAT binary)"#)
        .await?;
    let writer =
        tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT]);
    futures::pin_mut!(writer);
    for r in rows {
        writer.as_mut().write(&[&r.country_id, &r.country]).await?;
    }
    Ok(writer.finish().await?)
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, n) = match args.as_slice() {
        [mode, n] => (mode.as_str(), n.parse::<usize>()?),
        _ => return Err("usage: bench-write copy|ours|ours-replay|unnest-replay N".into()),
    };
    let batch: usize = std::env::var("BATCH_SIZE")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(50_000);
    let config = PostgresConfig::from_env()?;
    let admin = connect(&config).await?;
    let data = rows(n);
    truncate(&admin.client).await?;
    if mode.ends_with("replay") {
        copy_all(&admin.client, &data).await?;
        admin
            .client
            .batch_execute(r#"VACUUM ANALYZE "case""#)
            .await?;
    }

    let start = Instant::now();
    let changed = match mode {
        "copy" => copy_all(&admin.client, &data).await?,
        "ours" | "ours-replay" => {
            let mut writer = PostgresStore::new(config.clone()).pg_writer().await?;
            let mut changed = 0;
            for chunk in data.chunks(batch) {
                changed += writer.write_chunk(chunk).await?;
            }
            changed
        }
        "unnest-replay" => {
            let statement = admin
                .client
                .prepare_typed(
                    r#"INSERT INTO "case" (country_id, country) SELECT * FROM UNNEST($1::int4[], $2::text[])
                       ON CONFLICT (country_id) DO UPDATE SET country = EXCLUDED.country"#,
                    &[Type::INT4_ARRAY, Type::TEXT_ARRAY],
                )
                .await?;
            let mut changed = 0;
            for chunk in data.chunks(batch) {
                let ids: Vec<i32> = chunk.iter().map(|r| r.country_id).collect();
                let countries: Vec<&str> = chunk.iter().map(|r| r.country.as_str()).collect();
                changed += admin
                    .client
                    .execute(&statement, &[&ids, &countries])
                    .await?;
            }
            changed
        }
        other => return Err(format!("unknown mode {other}").into()),
    };
    let seconds = start.elapsed().as_secs_f64();
    let count: i64 = admin
        .client
        .query_one(r#"SELECT count(*) FROM "case""#, &[])
        .await?
        .get(0);
    if count as usize != n {
        return Err(format!("{mode}: expected {n} rows in the table, found {count}").into());
    }
    println!(
        "{}",
        serde_json::json!({"mode": mode, "rows": n, "seconds": seconds, "changed": changed, "batch_size": batch})
    );
    Ok(())
}
