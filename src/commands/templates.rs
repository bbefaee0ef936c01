//! `sms-relay segments` and `templates preview`: how a text is encoded, how many parts it is
//! billed as, and what it costs through each configured provider, before anyone sends it.

use serde_json::{Map, Value, json};

use super::{CommandError, connect_migrated, output::table};
use crate::{
    cli::{OutputFormat, PreviewArgs, SegmentsArgs},
    config::Config,
    domain::{Segments, parse_params, render, segments},
    providers::{Cost, PriceTable},
    store::Store,
};

/// The value a preview gives a `code` it was not given.
const SAMPLE_CODE: &str = "123456";

/// `segments TEXT`.
pub(super) fn segments(config: &Config, args: SegmentsArgs) -> Result<(), CommandError> {
    print(config, &args.text, &args.to, None, args.format);
    Ok(())
}

/// `templates preview NAME`.
pub(super) async fn preview(
    config: &Config,
    url: &str,
    args: PreviewArgs,
) -> Result<(), CommandError> {
    let store = Store::new(connect_migrated(url, 1).await?);
    let template = store
        .template(&args.name, &args.locale)
        .await?
        .ok_or_else(|| CommandError::NoSuchTemplate(args.name.clone(), args.locale.clone()))?;
    let mut given: Map<String, Value> = args
        .params
        .into_iter()
        .map(|(name, value)| (name, Value::from(value)))
        .collect();
    if template.placeholders.iter().any(|p| p == "code") {
        given
            .entry("code")
            .or_insert_with(|| Value::from(SAMPLE_CODE));
    }
    let params = parse_params(&Value::from(given).to_string())?;
    let text = render(&template.body, &params)?;
    print(
        config,
        &text,
        &args.to,
        Some(i64::from(template.max_parts)),
        args.format,
    );
    Ok(())
}

/// A cost as a decimal amount and its currency (`0.35 BDT`).
fn amount(cost: &Cost) -> String {
    let whole = cost.micros / 1_000_000;
    let fraction = format!("{:06}", cost.micros % 1_000_000);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{whole} {}", cost.currency)
    } else {
        format!("{whole}.{fraction} {}", cost.currency)
    }
}

/// Prints `text`'s encoding, size, parts (against `max_parts`, for a template) and its cost to
/// `to` through each configured provider.
fn print(config: &Config, text: &str, to: &str, max_parts: Option<i64>, format: OutputFormat) {
    let Segments {
        encoding,
        units,
        parts,
    } = segments::count(text);
    let costs: Vec<(String, Option<Cost>)> = config
        .providers
        .iter()
        .map(|p| (p.name.clone(), PriceTable::new(&p.prices).cost(to, parts)))
        .collect();
    let fits = max_parts.map(|max| i64::from(parts) <= max);
    match format {
        OutputFormat::Json => println!(
            "{}",
            json!({
                "text": text,
                "encoding": encoding.as_str(),
                "units": units,
                "parts": parts,
                "max_parts": max_parts,
                "fits": fits,
                "to": to,
                "costs": costs.iter().map(|(provider, cost)| json!({
                    "provider": provider,
                    "cost": cost.as_ref().map(|c| c.micros as f64 / 1e6),
                    "currency": cost.as_ref().map(|c| c.currency.clone()),
                })).collect::<Vec<_>>(),
            })
        ),
        OutputFormat::Table => {
            let mut rows = vec![
                ("text".to_owned(), text.to_owned()),
                ("encoding".to_owned(), encoding.as_str().to_owned()),
                (
                    "characters (septets or UTF-16 units)".to_owned(),
                    units.to_string(),
                ),
                ("parts".to_owned(), parts.to_string()),
            ];
            if let Some(max) = max_parts {
                let verdict = if fits == Some(true) {
                    format!("{max} (fits)")
                } else {
                    format!("{max}: too long, such a message would fail unsent")
                };
                rows.push(("max_parts".to_owned(), verdict));
            }
            for (provider, cost) in &costs {
                rows.push((
                    format!("cost to {to} via {provider}"),
                    cost.as_ref()
                        .map_or_else(|| "no price configured".to_owned(), amount),
                ));
            }
            let rows: Vec<Map<String, Value>> = rows
                .into_iter()
                .map(|(k, v)| Map::from_iter([("".into(), json!(k)), ("value".into(), json!(v))]))
                .collect();
            println!("{}", table(&["", "value"], &rows));
        }
    }
}
