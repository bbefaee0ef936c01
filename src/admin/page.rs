//! `GET /`: the operator page. Server-rendered HTML (maud escapes every value), with its charts
//! drawn here as inline SVG, no JavaScript, refreshing itself every 15 s, and laid out for a
//! phone as well as a desk. Numbers are masked and codes never read.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::{
    providers::{Per, cap::Measure},
    store::{BudgetGauge, CircuitRow, DeliveryDay, ProviderHour, RelayHolds, Run, Status, Unsent},
};

/// How often the page reloads itself, in seconds.
const REFRESH_S: u32 = 15;

/// One provider's cap and its window's use.
#[derive(Debug, Clone, PartialEq)]
pub struct CapUse {
    /// Provider name.
    pub provider: String,
    /// Messages or a currency.
    pub measure: Measure,
    /// Its window.
    pub per: Per,
    /// Used in the current window (messages, or millionths of the currency).
    pub used: u64,
    /// The cap (same unit).
    pub limit: u64,
}

/// Everything the page shows, read at one request.
#[derive(Debug, Clone)]
pub struct Page {
    /// When it was read.
    pub at: DateTime<Utc>,
    /// The queue.
    pub status: Status,
    /// What each relay holds.
    pub holds: Vec<RelayHolds>,
    /// Every live relay's circuits.
    pub circuits: Vec<CircuitRow>,
    /// Each provider's last hour.
    pub providers: Vec<ProviderHour>,
    /// The providers' hourly and daily caps.
    pub caps: Vec<CapUse>,
    /// The enqueue budgets' current windows.
    pub budgets: Vec<BudgetGauge>,
    /// Delivery and cost per provider and operator, last 24 h.
    pub delivery: Vec<DeliveryDay>,
    /// The latest messages that ended unsent.
    pub unsent: Vec<Unsent>,
    /// The latest maintenance runs.
    pub runs: Vec<Run>,
}

/// A horizontal bar chart: one bar per `(label, value, caption)`, scaled to the largest value
/// (or `max`, when given).
fn bars(id: &str, rows: &[(String, f64, String)], max: Option<f64>) -> Markup {
    const ROW: f64 = 30.0;
    const LABEL: f64 = 230.0;
    const WIDTH: f64 = 260.0;
    let top = max
        .unwrap_or_else(|| rows.iter().map(|r| r.1).fold(0.0, f64::max))
        .max(f64::MIN_POSITIVE);
    let height = ROW * rows.len() as f64 + 4.0;
    html! {
        svg id=(id) class="chart" role="img" viewBox=(format!("0 0 {} {height}", LABEL + WIDTH + 130.0))
            xmlns="http://www.w3.org/2000/svg" {
            @for (i, (label, value, caption)) in rows.iter().enumerate() {
                @let y = ROW * i as f64 + 2.0;
                text x="0" y=(y + 21.0) class="label" { (label) }
                rect x=(LABEL) y=(y + 4.0) height=(ROW - 8.0) width=(WIDTH * (value / top).clamp(0.0, 1.0)) {}
                text x=(LABEL + WIDTH * (value / top).clamp(0.0, 1.0) + 6.0) y=(y + 21.0) { (caption) }
            }
        }
    }
}

/// A timestamp as the page shows it (UTC, to the second).
fn when(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "—".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

/// An amount in millionths as a decimal.
fn micros(m: u64) -> String {
    format!("{:.2}", m as f64 / 1e6)
}

const STYLE: &str = r#"
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:70rem;padding:.5rem 1rem;color:#222}
h1{font-size:1.3rem;margin:.5rem 0}h2{font-size:1.05rem;margin:1.2rem 0 .4rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9rem}td,th{padding:.2rem .5rem;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}.scroll{overflow-x:auto}
.tiles{display:flex;flex-wrap:wrap;gap:.5rem}.tile{border:1px solid #ddd;border-radius:6px;padding:.4rem .7rem;min-width:7rem}
.tile b{display:block;font-size:1.3rem}.open{color:#b00020;font-weight:bold}.muted{color:#777}
svg.chart{width:100%;max-width:40rem;height:auto}svg rect{fill:#3a7bd5}svg text{font-size:18px;fill:#222}
"#;

/// The whole page.
pub fn render(page: &Page) -> Markup {
    let delivery_rate: Vec<(String, f64, String)> = page
        .delivery
        .iter()
        .map(|d| {
            let rate = d.delivered as f64 / d.accepted.max(1) as f64;
            (
                format!("{} → {}", d.provider, d.operator),
                rate,
                format!("{:.0}% of {}", rate * 100.0, d.accepted),
            )
        })
        .collect();
    let cost: Vec<(String, f64, String)> = page
        .delivery
        .iter()
        .filter_map(|d| {
            let currency = d.currency.as_ref()?;
            Some((
                format!("{} → {}", d.provider, d.operator),
                d.cost,
                format!("{:.2} {currency}", d.cost),
            ))
        })
        .collect();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(REFRESH_S);
                link rel="icon" href="data:,";
                title { "sms-relay" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "sms-relay" }
                p.muted { "Read at " (when(Some(page.at))) " UTC; reloads every " (REFRESH_S) " s." }

                h2 { "Queue" }
                div.tiles {
                    @for s in &page.status.states {
                        div.tile { span { (s.state) } b data-state=(s.state) { (s.count) } }
                    }
                    div.tile { span { "being sent" } b id="in-flight" { (page.status.in_flight) } }
                    div.tile {
                        span { "oldest due waited" }
                        b id="oldest-due" {
                            @match page.status.oldest_due_age_s {
                                Some(age) => { (format!("{age:.1} s")) }
                                None => { "nothing due" }
                            }
                        }
                    }
                }
                p.muted { "Waiting messages: all of them; ended ones: enqueued in the last 24 h." }
                @if !page.holds.is_empty() {
                    div.scroll { table {
                        tr { th { "relay" } th { "sending now" } }
                        @for h in &page.holds { tr { td { (h.relay) } td.n { (h.messages) } } }
                    } }
                }

                h2 { "Providers, last hour" }
                div.scroll { table id="providers" {
                    tr { th { "provider" } th { "calls" } th { "accepted" } th { "p50 ms" } th { "p95 ms" } }
                    @for p in &page.providers {
                        tr data-provider=(p.provider) {
                            td { (p.provider) } td.n.calls { (p.calls) } td.n { (p.accepted) }
                            td.n { (format!("{:.0}", p.p50_ms)) } td.n { (format!("{:.0}", p.p95_ms)) }
                        }
                    }
                } }
                @if page.circuits.is_empty() {
                    p.muted { "No running relay has reported its circuit breakers." }
                } @else {
                    div.scroll { table id="circuits" {
                        tr { th { "relay" } th { "provider" } th { "circuit" } th { "recent failures" } th { "reported" } }
                        @for c in &page.circuits {
                            tr {
                                td { (c.relay_id) } td { (c.provider) }
                                td class=(if c.state == "open" { "open" } else { "" }) { (c.state) }
                                td.n { (c.recent_failures) "/" (c.recent_calls) }
                                td { (when(Some(c.updated_at))) }
                            }
                        }
                    } }
                }
                @if !page.caps.is_empty() {
                    div.scroll { table id="caps" {
                        tr { th { "provider" } th { "per" } th { "used" } th { "cap" } }
                        @for cap in &page.caps {
                            tr {
                                td { (cap.provider) } td { (cap.per.as_str()) }
                                @match &cap.measure {
                                    Measure::Messages => { td.n { (cap.used) } td.n { (cap.limit) " messages" } }
                                    Measure::Spend(currency) => {
                                        td.n { (micros(cap.used)) } td.n { (micros(cap.limit)) " " (currency) }
                                    }
                                }
                            }
                        }
                    } }
                }

                h2 { "Budgets, current window" }
                @if page.budgets.is_empty() {
                    p.muted { "Nothing counted in the current windows." }
                } @else {
                    div.scroll { table id="budgets" {
                        tr { th { "budget" } th { "purpose" } th { "per" } th { "used" } th { "limit" } }
                        @for b in &page.budgets {
                            tr {
                                td { (b.scope) " " (b.subject) } td { (b.purpose) } td { (b.per) }
                                td.n {
                                    (b.used_messages) " codes"
                                    @if let Some(currency) = &b.currency { br; (format!("{:.2} {currency}", b.used_cost)) }
                                }
                                td.n {
                                    @if let Some(max) = b.max_messages { (max) " codes" }
                                    @if let (Some(max), Some(currency)) = (b.max_cost, &b.currency) { br; (format!("{max:.2} {currency}")) }
                                }
                            }
                        }
                    } }
                }

                h2 { "Delivery rate, last 24 h" }
                @if delivery_rate.is_empty() {
                    p.muted { "No accepted messages in the last 24 h." }
                } @else {
                    (bars("delivery-chart", &delivery_rate, Some(1.0)))
                    p.muted { "Share of accepted messages with a delivered receipt, per provider and operator." }
                }
                h2 { "Cost, last 24 h" }
                @if cost.is_empty() {
                    p.muted { "No priced messages in the last 24 h." }
                } @else {
                    (bars("cost-chart", &cost, None))
                }

                h2 { "Latest failed and expired messages" }
                @if page.unsent.is_empty() {
                    p.muted { "None in the last 24 h." }
                } @else {
                    div.scroll { table id="unsent" {
                        tr { th { "ended" } th { "state" } th { "template" } th { "number" } th { "reason" } th { "id" } }
                        @for u in &page.unsent {
                            tr {
                                td { (when(u.finished_at)) } td { (u.state) } td { (u.template) }
                                td.recipient { (u.recipient) } td { (u.reason) } td.muted { (u.id) }
                            }
                        }
                    } }
                }

                h2 { "Maintenance runs" }
                @if page.runs.is_empty() {
                    p.muted { "None yet." }
                } @else {
                    div.scroll { table id="runs" {
                        tr { th { "job" } th { "slot" } th { "relay" } th { "finished" } th { "rows" } th { "error" } }
                        @for r in &page.runs {
                            tr {
                                td { (r.job) } td { (when(Some(r.slot))) } td { (r.relay_id) }
                                td { (when(r.finished_at)) }
                                td.n { @if let Some(rows) = r.rows { (rows) } }
                                td class=(if r.error.is_some() { "open" } else { "" }) { (r.error.as_deref().unwrap_or("")) }
                            }
                        }
                    } }
                }
            }
        }
    }
}
