//! The data that moves through the pipeline: the row and its validation
//! ([`row`]), the retry-queue message ([`message`]), the changes-queue
//! message of stream mode ([`change`]), the failure report
//! ([`report`]), configured SQL names
//! ([`ident`]) and how values are shown to people ([`text`]).

pub mod change;
pub mod ident;
pub mod message;
pub mod report;
pub mod row;
pub mod text;
