//! The data that moves through the pipeline: the row and its validation
//! ([`row`]; the checks a mapping declares per column, in [`rules`]), the
//! retry-queue message ([`message`]; version 2, a row of any mapped table,
//! in [`mapped_message`]), the changes-queue
//! message of stream mode ([`change`]), the failure report
//! ([`report`]), configured SQL names
//! ([`ident`]), how values are shown to people ([`text`]), the typed
//! value of a column of any table ([`value`]: what Snowflake's decoder
//! makes of each type; [`value_json`]: the same exactly as JSON, for the
//! messages and the report), the type mapping ([`types`]: which Snowflake
//! type goes into which Postgres column) and the column match of a source
//! and a target table ([`columns`]), for the table run's tables (`case`'s
//! mapping and the file's).

pub mod change;
pub mod columns;
pub mod ident;
pub mod mapped_message;
pub mod message;
pub mod report;
pub mod row;
pub mod rules;
pub mod text;
pub mod types;
pub mod value;
pub mod value_json;
