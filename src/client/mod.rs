//! `kafka-gateway produce`: a command-line producer. It reads records from
//! an input (stdin), one per line, sends them in batches on one `Produce`
//! stream and matches the ordered acks back to input lines.
//!
//! - [`input`]: lines, bounded in length, and how they become records
//!   (plain values, `KEY<delimiter>VALUE`, or NDJSON);
//! - [`report`]: progress, failures, `--failed-out` and the summary.

pub mod input;
pub mod report;
