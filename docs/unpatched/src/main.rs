//! The protocol-fake scenarios of tests/snowflake_protocol.rs, run against
//! the unpatched snowflake-api 0.14.0 from crates.io (a recorded run).
use std::sync::Arc;
use std::time::{Duration, Instant};

use snowflake_api::{
    AuthArgs, AuthType, PasswordArgs, QueryResult, SnowflakeApi, SnowflakeApiBuilder,
};

struct Redirect(Arc<reqwest::Url>);
#[async_trait::async_trait]
impl reqwest_middleware::Middleware for Redirect {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        ext: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let u = req.url_mut();
        let _ = u.set_scheme(self.0.scheme());
        let _ = u.set_host(self.0.host_str());
        let _ = u.set_port(self.0.port_or_known_default());
        next.run(req, ext).await
    }
}

fn api(url: &str, db: &str) -> SnowflakeApi {
    let client = snowflake_api::connection::Connection::default_client_builder()
        .unwrap()
        .with(Redirect(Arc::new(reqwest::Url::parse(url).unwrap())))
        .build();
    SnowflakeApiBuilder::new(AuthArgs {
        account_identifier: "fakesnow".into(),
        warehouse: None,
        database: Some(db.into()),
        schema: Some("PUBLIC".into()),
        username: "x".into(),
        role: None,
        auth_type: AuthType::Password(PasswordArgs {
            password: "x".into(),
        }),
    })
    .with_client(client)
    .build()
    .unwrap()
}

async fn faults(url: &str, rules: serde_json::Value) {
    reqwest::Client::new()
        .post(format!("{url}/fake/faults"))
        .json(&serde_json::json!({"faults": rules}))
        .send()
        .await
        .unwrap();
}

fn first_id(c: &dyn arrow_array::Array) -> i128 {
    use arrow_array::*;
    let any = c.as_any();
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        return a.value(0).into();
    }
    if let Some(a) = any.downcast_ref::<Int32Array>() {
        return a.value(0).into();
    }
    if let Some(a) = any.downcast_ref::<Int16Array>() {
        return a.value(0).into();
    }
    if let Some(a) = any.downcast_ref::<Int8Array>() {
        return a.value(0).into();
    }
    if let Some(a) = any.downcast_ref::<Decimal128Array>() {
        return a.value(0);
    }
    -1
}

fn show(r: &Result<QueryResult, snowflake_api::SnowflakeApiError>) -> String {
    match r {
        Ok(QueryResult::Arrow(b)) => format!(
            "Ok: {} rows in Arrow",
            b.iter().map(|b| b.num_rows()).sum::<usize>()
        ),
        Ok(QueryResult::Json(j)) => format!("Ok: JSON {}", j.value),
        Ok(QueryResult::Empty) => "Ok: Empty (0 rows)".into(),
        Err(e) => format!("Err: {e}"),
    }
}

#[tokio::main]
async fn main() {
    let url = std::env::var("FAKE_URL").unwrap();
    let db = "UNPATCHED";
    let a = api(&url, "");
    let _ = a.exec(&format!("CREATE DATABASE IF NOT EXISTS {db}")).await;
    let a = api(&url, db);
    let _ = a.exec("CREATE SCHEMA IF NOT EXISTS PUBLIC").await;
    let _ = a
        .exec("CREATE OR REPLACE TABLE T (ID INT, C VARCHAR)")
        .await;
    println!(
        "load: {}",
        show(
            &a.exec(
                "INSERT INTO T SELECT SEQ4() + 1, 'USA' FROM TABLE(GENERATOR(ROWCOUNT => 4000))"
            )
            .await
        )
    );
    let sel = "SELECT ID, C FROM T ORDER BY ID";
    println!("1. plain select: {}", show(&a.exec(sel).await));
    faults(&url, serde_json::json!([{"route": "query", "sql_contains": "ORDER BY ID", "action": "async", "polls": 1}])).await;
    println!(
        "2. long statement (333334 + getResultUrl): {}",
        show(&a.exec(sel).await)
    );
    faults(&url, serde_json::json!([{"route": "query", "sql_contains": "ORDER BY ID", "action": "chunks", "chunk_rows": 1000, "inline_rows": 500}])).await;
    match a.exec(sel).await {
        Ok(QueryResult::Arrow(b)) => println!("3. chunked result: Ok, {} rows; first ids of the batches in the order handed out: {:?}",
            b.iter().map(|b| b.num_rows()).sum::<usize>(),
            b.iter().map(|b| first_id(b.column(0).as_ref())).collect::<Vec<_>>()),
        other => println!("3. chunked result: {}", show(&other)),
    }
    faults(&url, serde_json::json!([{"route": "query", "sql_contains": "ORDER BY ID", "action": "chunks", "chunk_rows": 1000, "returned_zero": true}])).await;
    println!(
        "4. every row in chunks, returned 0: {}",
        show(&a.exec(sel).await)
    );
    faults(&url, serde_json::json!([{"route": "query", "sql_contains": "ORDER BY ID", "action": "chunks", "chunk_rows": 1000, "inline_rows": 500, "keys": "qrmk"}])).await;
    println!("5. chunks keyed by qrmk only: {}", show(&a.exec(sel).await));
    faults(&url, serde_json::json!([{"route": "query", "sql_contains": "ORDER BY ID", "action": "chunks", "chunk_rows": 1000, "inline_rows": 500}, {"route": "chunk", "action": "status", "status": 403}])).await;
    println!(
        "6. a chunk answering 403 once: {}",
        show(&a.exec(sel).await)
    );
    faults(&url, serde_json::json!([{"route": "query", "sql_contains": "ORDER BY ID", "action": "chunks", "chunk_rows": 1000, "inline_rows": 500, "drop_rows": 7}])).await;
    println!(
        "7. a chunk with 7 rows fewer than its rowCount: {}",
        show(&a.exec(sel).await)
    );
    let _ = a
        .exec("CREATE OR REPLACE TEMPORARY TABLE SNAP AS SELECT * FROM T")
        .await;
    faults(&url, serde_json::json!([{"route": "query", "sql_contains": "FROM SNAP", "action": "session_expired"}])).await;
    println!(
        "8. session expired (390112), temp table: {}",
        show(&a.exec("SELECT COUNT(*) FROM SNAP").await)
    );
    println!(
        "   the next statement: {}",
        show(&a.exec("SELECT COUNT(*) FROM SNAP").await)
    );
    println!(
        "   a statement on another table: {}",
        show(&a.exec("SELECT COUNT(*) FROM T").await)
    );
    // A new client: the one above stays stuck on 390112.
    let a = api(&url, db);
    faults(&url, serde_json::json!([{"route": "query", "action": "status", "status": 503, "when": "after", "sql_contains": "COUNT(*) FROM T"}])).await;
    println!(
        "9. 503 after the statement ran: {}",
        show(&a.exec("SELECT COUNT(*) FROM T").await)
    );
    faults(&url, serde_json::json!([{"route": "query", "action": "status", "status": 429, "retry_after": 1, "sql_contains": "COUNT(*) FROM T"}])).await;
    let a = api(&url, db);
    println!(
        "10. 429 with Retry-After: {}",
        show(&a.exec("SELECT COUNT(*) FROM T").await)
    );
    let a = api(&url, db);
    let _ = a.exec("SELECT 1").await;
    faults(&url, serde_json::json!([{"route": "query", "action": "hang", "seconds": 20, "sql_contains": "COUNT(*) FROM T"}])).await;
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(15), a.exec("SELECT COUNT(*) FROM T")).await;
    println!(
        "11. a request that hangs 20 s: {} after {:?}",
        match r {
            Ok(r) => show(&r),
            Err(_) => "still waiting (no read timeout): the test gave up".into(),
        },
        t.elapsed()
    );
}
