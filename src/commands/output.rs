//! How the operator commands print rows: a table for people, JSON for scripts.

use comfy_table::Table;
use serde_json::{Map, Value};

use crate::cli::OutputFormat;

/// A value as a table cell: NULL is empty, strings are bare.
pub(super) fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `rows` as a table of `columns`, in that order.
pub(super) fn table(columns: &[&str], rows: &[Map<String, Value>]) -> Table {
    let mut table = Table::new();
    table.set_header(columns);
    for row in rows {
        table.add_row(
            columns
                .iter()
                .map(|c| cell(row.get(*c).unwrap_or(&Value::Null))),
        );
    }
    table
}

/// Prints `rows` under `columns` as a table, or as a JSON array.
pub(super) fn print_rows(columns: &[&str], rows: &[Map<String, Value>], format: OutputFormat) {
    match format {
        OutputFormat::Table if rows.is_empty() => println!("(none)"),
        OutputFormat::Table => println!("{}", table(columns, rows)),
        OutputFormat::Json => println!("{}", Value::from(rows.to_vec())),
    }
}
