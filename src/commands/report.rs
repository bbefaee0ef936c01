//! `sms-relay report`: runs every analyst report in `sql/reports/` over a window and prints it.
//!
//! The files are the ones analysts run with `psql -v since='7 days' -f …`: each is one SELECT
//! whose `:'since'` (psql's quoted variable) becomes `$1` here, bound to the window as interval
//! text. The reports are read generically: column names from the prepared statement, values as
//! JSON (`to_json` of each row), so numbers stay numbers and a new column needs no code.

use comfy_table::Table;
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Column, Executor, PgConnection, SqlSafeStr, Statement, types::Json};

use super::{CommandError, connect_migrated};
use crate::cli::{ReportArgs, ReportFormat};

/// One file of `sql/reports/`: its name is the file's stem, its title the first comment line.
struct Report {
    name: &'static str,
    sql: &'static str,
}

macro_rules! report {
    ($name:literal) => {
        Report {
            name: $name,
            sql: include_str!(concat!("../../sql/reports/", $name, ".sql")),
        }
    };
}

/// Every report, in the order they print (tests check this matches the directory).
static REPORTS: [Report; 7] = [
    report!("cost"),
    report!("delivery_rate"),
    report!("time_to_deliver"),
    report!("failures"),
    report!("attempts_per_delivered"),
    report!("fallback_resend"),
    report!("expired_superseded"),
];

impl Report {
    /// The first line of the file without its `-- `.
    fn title(&self) -> &'static str {
        let first = self.sql.lines().next().unwrap_or_default();
        first.strip_prefix("--").unwrap_or(first).trim()
    }

    /// The file's SELECT with the window as `$1` and without its closing semicolon.
    fn statement(&self) -> String {
        self.sql
            .trim_end()
            .trim_end_matches(';')
            .replace(":'since'", "$1")
    }

    /// Runs the report over `since` (interval text such as `7 days`).
    async fn run(&'static self, conn: &mut PgConnection, since: &str) -> sqlx::Result<Rows> {
        let sql = self.statement();
        let columns = conn
            .prepare(AssertSqlSafe(sql.clone()).into_sql_str())
            .await?
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        // A new line before the closing parenthesis, so a trailing comment cannot swallow it.
        let rows: Vec<Json<Map<String, Value>>> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT to_json(r) FROM (\n{sql}\n) AS r"
        )))
        .bind(since)
        .fetch_all(&mut *conn)
        .await?;
        Ok(Rows {
            report: self,
            columns,
            rows: rows.into_iter().map(|r| r.0).collect(),
        })
    }
}

/// What one report returned.
struct Rows {
    report: &'static Report,
    columns: Vec<String>,
    rows: Vec<Map<String, Value>>,
}

impl Rows {
    /// Each row's cells as text, in column order.
    fn cells(&self) -> impl Iterator<Item = Vec<String>> + '_ {
        self.rows.iter().map(|row| {
            self.columns
                .iter()
                .map(|c| text(row.get(c).unwrap_or(&Value::Null)))
                .collect()
        })
    }
}

/// A value as a table or CSV cell: NULL is empty, strings are bare.
fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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
    let pool = connect_migrated(url, 1).await?;
    let mut tx = pool.begin().await?;
    // One snapshot for all reports, so their figures agree with each other.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let mut results = Vec::with_capacity(REPORTS.len());
    for report in &REPORTS {
        results.push(report.run(&mut tx, &args.since).await?);
    }
    tx.commit().await?;

    match args.format {
        ReportFormat::Table => {
            for r in &results {
                println!(
                    "{} [{}, since {}]",
                    r.report.title(),
                    r.report.name,
                    args.since
                );
                if r.rows.is_empty() {
                    println!("(no rows)\n");
                    continue;
                }
                let mut table = Table::new();
                table.set_header(&r.columns);
                for cells in r.cells() {
                    table.add_row(cells);
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
                for cells in r.cells() {
                    println!(
                        "{}",
                        csv_line(
                            std::iter::once(r.report.name).chain(cells.iter().map(String::as_str))
                        )
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
                    (r.report.name.to_owned(), Value::Array(rows))
                })
                .collect();
            println!("{:#}", Value::Object(all));
        }
    }
    Ok(())
}
