//! Any bytes as a Snowflake row: validation, the string literal and the
//! DELETE statement; see `countries_snowflake::checks::row_from_bytes`.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    countries_snowflake::checks::row_from_bytes(bytes);
});
