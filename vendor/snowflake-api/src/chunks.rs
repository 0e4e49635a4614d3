//! The rows of an Arrow result: the inline first part, then the chunks on
//! cloud storage, downloaded a few at a time and kept in order. Each chunk
//! is fetched with `chunkHeaders`, or with the `qrmk` key when there are
//! none; its status is checked and a failure retried ([`Connection`]); a
//! gzip body is recognised by its magic bytes whether or not a
//! `Content-Encoding` header said so; and every count is checked: each
//! chunk against its `rowCount`, the whole against `total`.

use std::io::Read;
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use base64::Engine;
use bytes::{Buf, Bytes};
use futures::{StreamExt, TryStreamExt};

use crate::connection::Connection;
use crate::responses::{ExecResponseChunk, QueryData};
use crate::SnowflakeApiError;

const SSE_C_KEY: &str = "x-amz-server-side-encryption-customer-key";
const SSE_C_ALGORITHM: &str = "x-amz-server-side-encryption-customer-algorithm";

/// The batches of the whole result, in order, and how many chunks it had.
pub(crate) async fn collect(
    connection: &Connection,
    data: &QueryData,
    query_id: &str,
    concurrency: usize,
    deadline: Option<Instant>,
) -> Result<(Vec<RecordBatch>, usize), SnowflakeApiError> {
    let broken = |detail: String| SnowflakeApiError::BrokenResult {
        query_id: query_id.to_string(),
        detail,
    };
    let mut batches = Vec::new();
    if let Some(inline) = data.rowset_base64.as_deref().filter(|s| !s.is_empty()) {
        let bytes = base64::engine::general_purpose::STANDARD.decode(inline)?;
        batches.extend(decode(Bytes::from(bytes))?);
    }
    let inline_rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let headers = chunk_headers(data);
    let downloaded: Vec<Vec<RecordBatch>> = futures::stream::iter(data.chunks.clone().into_iter().enumerate())
        .map(|(index, chunk)| fetch(connection, index, chunk, &headers, query_id, deadline))
        .buffered(concurrency.max(1))
        .try_collect()
        .await?;
    let chunk_rows: usize = downloaded.iter().flatten().map(RecordBatch::num_rows).sum();
    let arrived = inline_rows + chunk_rows;
    if let Some(total) = data.total {
        if i64::try_from(arrived).ok() != Some(total) {
            return Err(broken(format!(
                "{arrived} rows arrived ({inline_rows} inline, {chunk_rows} in {} chunks) where the result says {total}",
                data.chunks.len()
            )));
        }
    }
    batches.extend(downloaded.into_iter().flatten());
    Ok((batches, data.chunks.len()))
}

/// One chunk, fetched, inflated, decoded and counted.
async fn fetch(
    connection: &Connection,
    index: usize,
    chunk: ExecResponseChunk,
    headers: &[(String, String)],
    query_id: &str,
    deadline: Option<Instant>,
) -> Result<Vec<RecordBatch>, SnowflakeApiError> {
    let body = connection
        .get_chunk(&chunk.url, headers, deadline)
        .await
        .map_err(|source| SnowflakeApiError::Chunk {
            index,
            query_id: query_id.to_string(),
            source,
        })?;
    let part = decode(gunzip(body)?)?;
    let rows: usize = part.iter().map(RecordBatch::num_rows).sum();
    if i64::try_from(rows).ok() != Some(chunk.row_count) {
        return Err(SnowflakeApiError::BrokenResult {
            query_id: query_id.to_string(),
            detail: format!(
                "chunk {index} holds {rows} rows where its rowCount says {}",
                chunk.row_count
            ),
        });
    }
    Ok(part)
}

/// `chunkHeaders` as given, or the SSE-C headers made from `qrmk`.
fn chunk_headers(data: &QueryData) -> Vec<(String, String)> {
    match (&data.chunk_headers, &data.qrmk) {
        (Some(headers), _) if !headers.is_empty() => headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        (_, Some(qrmk)) => vec![
            (SSE_C_KEY.to_string(), qrmk.clone()),
            (SSE_C_ALGORITHM.to_string(), "AES256".to_string()),
        ],
        _ => Vec::new(),
    }
}

/// A gzip body (by its magic bytes) inflated; anything else as it is.
fn gunzip(body: Bytes) -> Result<Bytes, SnowflakeApiError> {
    if body.len() < 2 || body[..2] != [0x1f, 0x8b] {
        return Ok(body);
    }
    let mut out = Vec::with_capacity(body.len() * 4);
    flate2::read::MultiGzDecoder::new(body.reader()).read_to_end(&mut out)?;
    Ok(Bytes::from(out))
}

fn decode(bytes: Bytes) -> Result<Vec<RecordBatch>, SnowflakeApiError> {
    let reader = StreamReader::try_new(bytes.reader(), None)?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_is_found_by_its_magic_bytes() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"arrow bytes").unwrap();
        let zipped = Bytes::from(enc.finish().unwrap());
        assert_eq!(gunzip(zipped).unwrap(), Bytes::from_static(b"arrow bytes"));
        assert_eq!(
            gunzip(Bytes::from_static(b"\xff\xff\xff\xffplain")).unwrap(),
            Bytes::from_static(b"\xff\xff\xff\xffplain")
        );
    }

    #[test]
    fn qrmk_is_sent_when_there_are_no_chunk_headers() {
        let data: QueryData = serde_json::from_value(serde_json::json!({
            "qrmk": "K", "chunkHeaders": {}
        }))
        .unwrap();
        assert_eq!(
            chunk_headers(&data),
            vec![
                (SSE_C_KEY.to_string(), "K".to_string()),
                (SSE_C_ALGORITHM.to_string(), "AES256".to_string())
            ]
        );
        let data: QueryData = serde_json::from_value(serde_json::json!({
            "qrmk": "K", "chunkHeaders": {"x-amz-server-side-encryption-customer-key": "H"}
        }))
        .unwrap();
        assert_eq!(
            chunk_headers(&data),
            vec![(SSE_C_KEY.to_string(), "H".to_string())]
        );
    }
}
