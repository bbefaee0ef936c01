//! The analysts' reports in `sql/reports/`, run as `sms-relay report` runs them.
//!
//! The files are the ones analysts run with `psql -v since='7 days' -f …`: each is one SELECT
//! whose `:'since'` (psql's quoted variable) becomes `$1` here, bound to the window as interval
//! text. The reports are read generically: column names from the prepared statement, values as
//! JSON (`to_json` of each row), so numbers stay numbers and a new column needs no code.

use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Column, Executor, PgConnection, SqlSafeStr, Statement, types::Json};

use super::{Result, Store};

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
static REPORTS: [Report; 8] = [
    report!("cost"),
    report!("delivery_rate"),
    report!("time_to_deliver"),
    report!("pickup"),
    report!("failures"),
    report!("attempts_per_delivered"),
    report!("fallback_resend"),
    report!("expired_superseded"),
];

/// All reports share one snapshot, so their figures agree with each other; nothing they run
/// writes.
const SNAPSHOT: &str = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// What one report returned.
#[derive(Debug, Clone)]
pub struct ReportRows {
    /// The file's stem, e.g. `cost`.
    pub name: &'static str,
    /// The file's first line without its `-- `.
    pub title: &'static str,
    /// Column names, in the report's order.
    pub columns: Vec<String>,
    /// One JSON object per row, keyed by column name.
    pub rows: Vec<Map<String, Value>>,
}

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
    async fn run(&'static self, conn: &mut PgConnection, since: &str) -> Result<ReportRows> {
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
        Ok(ReportRows {
            name: self.name,
            title: self.title(),
            columns,
            rows: rows.into_iter().map(|r| r.0).collect(),
        })
    }
}

impl Store {
    /// Runs every report over `since` (interval text such as `7 days`) in one read-only snapshot,
    /// in the order they print.
    pub async fn reports(&self, since: &str) -> Result<Vec<ReportRows>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(SNAPSHOT).execute(&mut *tx).await?;
        let mut results = Vec::with_capacity(REPORTS.len());
        for report in &REPORTS {
            results.push(report.run(&mut tx, since).await?);
        }
        tx.commit().await?;
        Ok(results)
    }
}
