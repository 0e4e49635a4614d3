//! Checks over arbitrary queue bodies, shared by the fuzz targets (`fuzz/`,
//! built with the `fuzzing` feature) and the unit tests below, which run them
//! on the bad-input corpus and on random input in every `make test`. The
//! checks over rows and Snowflake statements are in `countries_snowflake::checks`.
//!
//! Each check panics when a property does not hold; nothing else may panic.

use crate::model::message::{parse_retry_message, MalformedMessage};
use crate::model::row::validate;

/// A retry-queue body of any bytes (SQS bodies are text; whatever arrives is
/// read as UTF-8 with replacement, as the Lambda event gives it): parsing
/// never panics, a parsed message survives a round trip, and a refusal is one
/// short line that names what was wrong.
pub fn retry_message_body(bytes: &[u8]) {
    let body = String::from_utf8_lossy(bytes);
    match parse_retry_message(Some(&body)) {
        Ok(message) => {
            let again = serde_json::to_string(&message).expect("a parsed message serialises");
            let reparsed = parse_retry_message(Some(&again)).expect("a serialised message parses");
            assert_eq!(reparsed, message);
            let _ = message.record_key();
            let _ = validate(&message.record);
        }
        Err(e) => {
            let text = e.to_string();
            let chars = text.chars().count();
            assert!(chars <= 320, "an error of {chars} characters");
            assert!(!text.contains('\n'), "a multi-line error: {text:?}");
            if body.trim().is_empty() {
                assert_eq!(e, MalformedMessage::Empty);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The corpus of the README's "Reliability" table, plus a few bodies
    /// that broke parsers elsewhere (deep nesting, huge numbers, BOMs).
    #[test]
    fn the_bad_input_corpus_passes_every_check() {
        let huge = format!(
            "{{\"schema_version\":1,\"pad\":\"{}\"}}",
            "x".repeat(300_000)
        );
        let deep = "[".repeat(10_000);
        let bodies: Vec<&[u8]> = vec![
            b"",
            b"   ",
            b"not json",
            b"{",
            b"null",
            b"[1,2]",
            b"{\"schema_version\":2}",
            b"{\"schema_version\":\"1\"}",
            b"{\"schema_version\":1e400}",
            b"{\"schema_version\":1}",
            b"{\"schema_version\":1,\"record\":{\"country_id\":1}}",
            b"{\"schema_version\":1,\"record\":{\"country_id\":1e50,\"country\":\"USA\"}}",
            b"\xef\xbb\xbf{\"schema_version\":1}",
            b"\xff\xfe\x00\x01binary junk",
            b"\x00\x00\x00",
            // Found by the fuzzer: serde quoted a 600-byte unknown variant in
            // its error, which went unbounded into logs and the report.
            include_bytes!("../../fuzz/seeds/retry_message/unknown_variant_huge.json"),
            // Then that escaping (DEL becomes \u{7f}) made the cut line long.
            include_bytes!("../../fuzz/seeds/retry_message/unknown_variant_escaped.json"),
            huge.as_bytes(),
            deep.as_bytes(),
        ];
        for body in bodies {
            retry_message_body(body);
        }
    }

    proptest! {
        #[test]
        fn any_body_passes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            retry_message_body(&bytes);
        }

        #[test]
        fn any_json_shaped_body_passes(
            version in prop::option::of(any::<i64>()),
            id in prop::option::of(any::<i64>()),
            country in prop::option::of(".{0,8}"),
        ) {
            let body = serde_json::json!({
                "schema_version": version,
                "record": {"country_id": id, "country": country},
                "error": {"class": "invalid", "message": "x"},
                "run_id": "00000000-0000-0000-0000-000000000000",
                "first_failed_at": "2026-11-24T06:00:00Z",
                "attempt": 1,
            });
            retry_message_body(body.to_string().as_bytes());
        }
    }
}
