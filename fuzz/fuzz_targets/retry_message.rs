//! Any bytes as a retry-queue body: see `countries_shared::checks::retry_message_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    countries_shared::checks::retry_message_body(bytes);
});
