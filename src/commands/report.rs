//! `sms-relay report`: runs every analyst report in `sql/reports/` over a window and prints it
//! as a table, CSV or JSON.

use comfy_table::Table;
use serde_json::{Map, Value};

use super::{CommandError, connect_migrated, output::cell};
use crate::{
    cli::{ReportArgs, ReportFormat},
    store::{ReportRows, Store},
};

/// Each row's cells as text, in column order.
fn cells(report: &ReportRows) -> impl Iterator<Item = Vec<String>> + '_ {
    report.rows.iter().map(|row| {
        report
            .columns
            .iter()
            .map(|c| cell(row.get(c).unwrap_or(&Value::Null)))
            .collect()
    })
}

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv_line<'a>(fields: impl IntoIterator<Item = &'a str>) -> String {
    fields
        .into_iter()
        .map(csv_field)
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs every report in one read-only snapshot and prints them in `args.format`.
pub(super) async fn report(url: &str, args: ReportArgs) -> Result<(), CommandError> {
    let store = Store::new(connect_migrated(url, 1).await?);
    let results = store.reports(&args.since).await?;

    match args.format {
        ReportFormat::Table => {
            for r in &results {
                println!("{} [{}, since {}]", r.title, r.name, args.since);
                if r.rows.is_empty() {
                    println!("(no rows)\n");
                    continue;
                }
                let mut table = Table::new();
                table.set_header(&r.columns);
                for row in cells(r) {
                    table.add_row(row);
                }
                println!("{table}\n");
            }
        }
        ReportFormat::Csv => {
            for r in &results {
                println!(
                    "{}",
                    csv_line(std::iter::once("report").chain(r.columns.iter().map(String::as_str)))
                );
                for row in cells(r) {
                    println!(
                        "{}",
                        csv_line(std::iter::once(r.name).chain(row.iter().map(String::as_str)))
                    );
                }
                println!();
            }
        }
        ReportFormat::Json => {
            let all: Map<String, Value> = results
                .into_iter()
                .map(|r| {
                    let rows = r.rows.into_iter().map(Value::Object).collect();
                    (r.name.to_owned(), Value::Array(rows))
                })
                .collect();
            println!("{:#}", Value::Object(all));
        }
    }
    Ok(())
}
