//! Postgres write-stage measurements for `make bench` (infra/local/bench.py).
//! Each subcommand prints one JSON object with the seconds it took.
//!
//!   bench-write copy N          binary COPY of N rows into an empty table (the limit)
//!   bench-write ours N          our write stage (COPY first, upsert fallback) into an empty table
//!   bench-write ours-replay N   our write stage when every row already exists
//!   bench-write unnest-replay N a plain UNNEST … ON CONFLICT DO UPDATE of the same rows (replay baseline)
//!   bench-write copy-as-writers N  binary COPY of the same rows in one stream writer's pattern: one COPY
//!                               per invocation of 10 messages, each invocation's rows in id order (the
//!                               floor for one writer: Postgres's share of its work, no parsing)
//!   bench-write stream-writers N  stream mode's writer handler, `WRITERS` at once, on N rows packed as the
//!                               publisher packs them (`CHANGE_BUCKETS` groups of `CHANGE_BLOCK_IDS` blocks, each group with one writer,
//!                               10 messages an invocation, as a FIFO event source mapping delivers them),
//!                               without the queue: the writers and Postgres alone
//!
//! It reads the `PG*` variables and `BATCH_SIZE`, and uses the table "case".

use std::time::Instant;

use countries_postgres::connect::connect;
use countries_postgres::sink::pool::PostgresStore;
use countries_shared::config::PostgresConfig;
use countries_shared::model::row::{validate, CountryRow, SourceRow};
use countries_shared::sink::isolate::AllOrNothing;
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

    // Stream mode's writers: packed and wired before the clock starts.
    let streamed = if mode == "stream-writers" {
        let config = countries_shared::config::WriterConfig::from_env()?;
        let per_writer = pack_for_writers(&data, batch)?;
        // One function per writer, as each Lambda sandbox wires its own (and
        // keeps its own warm connection).
        let mut functions = Vec::with_capacity(per_writer.len());
        for _ in 0..per_writer.len() {
            functions.push(writer::build(&config).await);
        }
        Some((functions, per_writer))
    } else {
        None
    };

    let invocations = if mode == "copy-as-writers" {
        writer_invocations(&data, batch)
    } else {
        Vec::new()
    };

    let start = Instant::now();
    let changed = match mode {
        "copy" => copy_all(&admin.client, &data).await?,
        "copy-as-writers" => {
            let mut changed = 0;
            for rows in &invocations {
                changed += copy_all(&admin.client, rows).await?;
            }
            changed
        }
        "ours" | "ours-replay" => {
            let mut writer = PostgresStore::new(config.clone()).pg_sink().await?;
            let mut changed = 0;
            for chunk in data.chunks(batch) {
                let chunk: Vec<&CountryRow> = chunk.iter().collect();
                changed += writer.write_all(&chunk).await?;
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
        "stream-writers" => match streamed {
            Some((functions, per_writer)) => stream_writers(functions, per_writer).await?,
            None => 0,
        },
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

/// The rows one stream writer gets per invocation (10 messages packed as
/// the publisher packs them), each invocation's in id order.
fn writer_invocations(data: &[CountryRow], batch: usize) -> Vec<Vec<CountryRow>> {
    use countries_shared::model::change::{pack, MAX_CHANGE_BYTES};
    let groups = groups();
    let by_id: std::collections::HashMap<i32, &CountryRow> =
        data.iter().map(|r| (r.country_id, r)).collect();
    let messages: Vec<Vec<i32>> = data
        .chunks(batch.max(1))
        .flat_map(|chunk| pack(uuid::Uuid::nil(), chunk, groups, MAX_CHANGE_BYTES))
        .map(|b| b.rows.iter().map(|r| r.0).collect())
        .collect();
    messages
        .chunks(10)
        .map(|invocation| {
            let mut ids: Vec<i32> = invocation.iter().flatten().copied().collect();
            ids.sort_unstable();
            ids.iter()
                .filter_map(|id| by_id.get(id).map(|r| (*r).clone()))
                .collect()
        })
        .collect()
}

/// The publisher's packing, chunk by chunk, each group (bucket) given to
/// one of `WRITERS` writers, as FIFO hands a group to one consumer.
fn pack_for_writers(
    data: &[CountryRow],
    batch: usize,
) -> Result<Vec<Vec<(String, String)>>, Failure> {
    use countries_shared::model::change::{pack, MAX_CHANGE_BYTES};
    let number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let writers = number("WRITERS", 1).max(1);
    let groups = groups();
    let mut per_writer: Vec<Vec<(String, String)>> = vec![Vec::new(); writers];
    for chunk in data.chunks(batch.max(1)) {
        for b in pack(uuid::Uuid::new_v4(), chunk, groups, MAX_CHANGE_BYTES) {
            let body = serde_json::to_string(&b)?;
            per_writer[b.bucket as usize % writers].push((b.bucket.to_string(), body));
        }
    }
    Ok(per_writer)
}

/// How the publisher would spread ids over message groups, from
/// `CHANGE_BUCKETS` and `CHANGE_BLOCK_IDS` as it reads them (with their
/// defaults).
fn groups() -> countries_shared::model::change::Groups {
    use countries_shared::config::{vars, Env};
    let mut env = Env::from_process();
    countries_shared::model::change::Groups {
        buckets: env.number(&vars::CHANGE_BUCKETS),
        block: env.number(&vars::CHANGE_BLOCK_IDS),
    }
}

/// Stream mode's writers on pre-packed batches: each writer on a thread of
/// its own with its own multi-thread runtime (as Lambda runs writers in sandboxes side by
/// side) invokes the real writer handler with FIFO events of 10 messages of
/// its own groups. Returns the messages written.
async fn stream_writers(
    functions: Vec<countries_shared::lambda::writer::WriterFunction>,
    per_writer: Vec<Vec<(String, String)>>,
) -> Result<u64, Failure> {
    let threads: Vec<std::thread::JoinHandle<Result<u64, String>>> = per_writer
        .into_iter()
        .zip(functions)
        .map(|(messages, function)| {
            std::thread::spawn(move || {
                // The runtime the writer binary runs on (`#[tokio::main]`:
                // one worker per core), so that the COPY's connection task
                // runs beside the handler as it does in Lambda.
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?
                    .block_on(one_writer(&function, &messages))
            })
        })
        .collect();
    let mut messages = 0;
    for thread in threads {
        messages += thread.join().map_err(|_| "a writer thread panicked")??;
    }
    Ok(messages)
}

async fn one_writer(
    function: &countries_shared::lambda::writer::WriterFunction,
    messages: &[(String, String)],
) -> Result<u64, String> {
    use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
    let mut written = 0u64;
    for (n, invocation) in messages.chunks(10).enumerate() {
        let mut event = SqsEvent::default();
        for (i, (group, body)) in invocation.iter().enumerate() {
            let mut record = SqsMessage::default();
            record.message_id = Some(format!("{n}-{i}"));
            record.body = Some(body.clone());
            record
                .attributes
                .insert("MessageGroupId".into(), group.clone());
            event.records.push(record);
        }
        let response = countries_shared::lambda::writer::handle(
            function,
            lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default()),
        )
        .await
        .map_err(|e| format!("{}: {}", e.error_type, e.error_message))?;
        if !response.batch_item_failures.is_empty() {
            return Err(format!(
                "{} messages came back",
                response.batch_item_failures.len()
            ));
        }
        written += invocation.len() as u64;
    }
    Ok(written)
}
