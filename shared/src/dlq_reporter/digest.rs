//! The digest email as data: one subject, a text body, an HTML body (every
//! value escaped), and the CSV attachment when the records do not all fit.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use serde_json::Value as Json;

use crate::model::report::{Digest, FailureEntry};
use crate::model::text::one_line;

pub const RECOVERY_STEPS: &[(&str, &str)] = &[
    (
        "countries failures",
        "list the unresolved failures and their errors",
    ),
    (
        "countries replay [MESSAGE_ID…]",
        "after fixing the cause in Postgres, write the records again and mark them resolved",
    ),
    (
        "countries resolve MESSAGE_ID… --note …",
        "mark records resolved without writing them (fixed at the source, or an older version)",
    ),
    (
        "countries redrive",
        "move what is still in the dead-letter queue back to the retry queue",
    ),
];

/// One record of the digest: the first entry of its `record_key`, and how
/// many dead letters carried it (a row enqueued twice, after a crash between
/// the enqueue and the delete, is one record).
pub struct DigestRecord<'a> {
    pub entry: &'a FailureEntry,
    pub copies: usize,
}

/// The entries grouped by `record_key`, in order of first appearance; an
/// entry without a key (a malformed body) is a record of its own.
pub fn group_records(entries: &[FailureEntry]) -> Vec<DigestRecord<'_>> {
    let mut records: Vec<DigestRecord<'_>> = Vec::new();
    let mut position: std::collections::HashMap<&str, usize> = Default::default();
    for entry in entries {
        let key = entry.record_key.as_deref();
        match key.and_then(|k| position.get(k)) {
            Some(&at) => records[at].copies += 1,
            None => {
                if let Some(k) = key {
                    position.insert(k, records.len());
                }
                records.push(DigestRecord { entry, copies: 1 });
            }
        }
    }
    records
}

/// Builds the digest. `stored` says whether the report is stored.
pub fn compose_digest(
    entries: &[FailureEntry],
    stored: &Result<(), String>,
    report_run_id: Uuid,
    email_rows: usize,
    now: DateTime<Utc>,
) -> Digest {
    let records = group_records(entries);
    let n = records.len();
    let since = entries
        .iter()
        .filter_map(|e| e.first_failed_at)
        .min()
        .unwrap_or(now);
    let window = format!(
        "{} – {} UTC",
        since.format("%Y-%m-%d %H:%M"),
        now.format("%Y-%m-%d %H:%M")
    );
    let subject = format!(
        "[countries replication] {n} failed record{} need{} attention ({window})",
        if n == 1 { "" } else { "s" },
        if n == 1 { "s" } else { "" }
    );

    let mut by_error: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in records.iter().map(|r| r.entry) {
        *by_error
            .entry((
                e.error_class.clone(),
                e.sqlstate.clone().unwrap_or_else(|| "-".into()),
            ))
            .or_default() += 1;
    }
    let shown = &records[..n.min(email_rows)];
    let stored_line = match stored {
        Ok(_) => format!("The failure report is stored in Postgres, table failure_report (report run {report_run_id})."),
        Err(e) => format!(
            "WARNING: the failure report was NOT stored in Postgres ({e}). The records are listed in this \
             email and stay in the dead-letter queue; the next report run stores them."
        ),
    };

    let mut text = String::new();
    let _ = writeln!(
        text,
        "{n} record{} of the countries replication could not be written to Postgres after all retries.\n",
        if n == 1 { "" } else { "s" }
    );
    let _ = writeln!(text, "{stored_line}\n");
    let _ = writeln!(text, "By error:");
    for ((class, code), count) in &by_error {
        let _ = writeln!(text, "  {class:<10} {code:<8} {count}");
    }
    let _ = writeln!(
        text,
        "\nRecords ({}{}):",
        if shown.len() < n {
            format!("first {} of {n}", shown.len())
        } else {
            format!("all {n}")
        },
        if shown.len() < n {
            "; all of them are in the attached CSV"
        } else {
            ""
        }
    );
    let _ = writeln!(
        text,
        "  {:<12} {:<12} {:<10} {:<8} {:<17} message",
        "country_id", "country", "class", "sqlstate", "first failed"
    );
    for record in shown {
        let e = record.entry;
        let _ = writeln!(
            text,
            "  {:<12} {:<12} {:<10} {:<8} {:<17} {}",
            e.id_cell(),
            e.row_cell(10),
            e.error_class,
            e.sqlstate.as_deref().unwrap_or("-"),
            e.first_failed_at
                .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
            message_line(record),
        );
    }
    let _ = writeln!(
        text,
        "\nHow to recover (from a shell with the deployment's environment):"
    );
    for (command, what) in RECOVERY_STEPS {
        let _ = writeln!(text, "  {command:<34} {what}");
    }

    let mut html = String::new();
    let _ = write!(
        html,
        "<html><body style=\"font-family:sans-serif\"><h2>{}</h2><p>{}</p><p>{}</p>",
        escape_html(&subject),
        escape_html(&format!(
            "{n} record(s) of the countries replication could not be written to Postgres after all retries."
        )),
        escape_html(&stored_line)
    );
    html.push_str("<h3>By error</h3><table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\"><tr><th>class</th><th>sqlstate</th><th>records</th></tr>");
    for ((class, code), count) in &by_error {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{count}</td></tr>",
            escape_html(class),
            escape_html(code)
        );
    }
    let _ = write!(
        html,
        "</table><h3>Records ({})</h3><table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\">\
         <tr><th>country_id</th><th>country</th><th>class</th><th>sqlstate</th><th>first failed</th><th>message</th></tr>",
        if shown.len() < n {
            format!("first {} of {n}; all of them are in the attached CSV", shown.len())
        } else {
            format!("all {n}")
        }
    );
    for record in shown {
        let e = record.entry;
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape_html(&e.id_cell()),
            escape_html(&e.row_cell(10)),
            escape_html(&e.error_class),
            escape_html(e.sqlstate.as_deref().unwrap_or("-")),
            e.first_failed_at
                .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
            escape_html(&message_line(record)),
        );
    }
    html.push_str("</table><h3>How to recover</h3><ul>");
    for (command, what) in RECOVERY_STEPS {
        let _ = write!(
            html,
            "<li><code>{}</code>: {}</li>",
            escape_html(command),
            escape_html(what)
        );
    }
    html.push_str("</ul></body></html>");

    Digest {
        subject,
        text,
        html,
        csv: (shown.len() < n).then(|| to_csv(&records)),
    }
}

fn message_line(record: &DigestRecord<'_>) -> String {
    let e = record.entry;
    let mut line = one_line(&e.error_message, 160);
    if let Some(raw) = &e.raw_body {
        line.push_str(" | body: ");
        line.push_str(&one_line(raw, 80));
    }
    if record.copies > 1 {
        line.push_str(&format!(" (×{} dead letters)", record.copies));
    }
    line
}

pub fn escape_html(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A text cell a spreadsheet will not run: one that begins with `=`, `+`,
/// `-`, `@`, a tab or a carriage return gets a leading `'` (OWASP's rule for
/// CSV injection), as the HTML part escapes its markup. Source values are
/// raw: a country of `=HYPERLINK(...)` must reach a stakeholder as text.
pub fn spreadsheet_safe(cell: String) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell,
    }
}

/// The bytes an entry's line of the CSV attachment takes (exactly: it is
/// written the same way), for keeping one email under its bound.
pub fn csv_line_bytes(entry: &FailureEntry) -> usize {
    let mut out = csv::Writer::from_writer(Vec::new());
    let _ = out.write_record(csv_cells(&DigestRecord { entry, copies: 1 }));
    out.into_inner().map_or(0, |bytes| bytes.len())
}

fn csv_cells(record: &DigestRecord<'_>) -> [String; 12] {
    let e = record.entry;
    [
        e.message_id.clone(),
        e.country_id.map(|i| i.to_string()).unwrap_or_default(),
        spreadsheet_safe(e.country.clone().unwrap_or_default()),
        e.error_class.clone(),
        e.sqlstate.clone().unwrap_or_default(),
        spreadsheet_safe(e.error_message.clone()),
        e.attempts.map(|a| a.to_string()).unwrap_or_default(),
        e.first_failed_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
        spreadsheet_safe(e.raw_body.clone().unwrap_or_default()),
        record.copies.to_string(),
        e.table.clone().unwrap_or_default(),
        spreadsheet_safe(
            e.row
                .as_ref()
                .map(|row| Json::Object(row.clone()).to_string())
                .unwrap_or_default(),
        ),
    ]
}

/// Every entry as CSV, one record per line (RFC 4180 quoting; text cells
/// made [`spreadsheet_safe`]; numbers and times are ours and stay as they are).
pub fn to_csv(records: &[DigestRecord<'_>]) -> String {
    let mut out = csv::Writer::from_writer(Vec::new());
    // Writing into memory cannot fail; a record that did would only be
    // missing from the attachment, never from the stored report.
    let _ = out.write_record([
        "message_id",
        "country_id",
        "country",
        "error_class",
        "sqlstate",
        "error_message",
        "attempts",
        "first_failed_at",
        "raw_body",
        "copies",
        // A mapped table's record (empty for `case`): its table and row.
        "table",
        "row",
    ]);
    for record in records {
        let _ = out.write_record(csv_cells(record));
    }
    let bytes = out.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}
