//! The data that moves through the pipeline: the row and its validation
//! ([`row`]), the retry-queue message ([`message`]), the changes-queue
//! message of stream mode ([`change`]), the failure report
//! ([`report`]), configured SQL names
//! ([`ident`]), how values are shown to people ([`text`]), and the typed
//! value of a column of any table ([`value`]: what Snowflake's decoder
//! makes of each type, the first step towards tables other than `case`).

pub mod change;
pub mod ident;
pub mod message;
pub mod report;
pub mod row;
pub mod text;
pub mod value;
