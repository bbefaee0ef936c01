//! Rendering `{placeholder}` templates with a message's params.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

/// Why a message could not be rendered. Never worth retrying: the row itself is bad.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// The template no longer exists (it was deleted after the message was enqueued).
    #[error("template {name}/{locale} does not exist")]
    UnknownTemplate {
        /// Template name.
        name: String,
        /// Template locale.
        locale: String,
    },
    /// A placeholder has no value in params.
    #[error("params have no value for placeholder {{{0}}}")]
    MissingParam(String),
    /// A placeholder's value is an object, array, bool or null.
    #[error("params value for placeholder {{{0}}} is not a string or number")]
    NotScalar(String),
    /// params is not a JSON object.
    #[error("params is not a JSON object")]
    ParamsNotObject,
    /// params could not be decoded (e.g. a number beyond what a double holds, or nesting too deep).
    #[error("params cannot be decoded: {0}")]
    Undecodable(String),
}

/// A message's params for rendering: each value's JSON text as stored, so a number is written
/// exactly as it was enqueued (`99999999999999999999`, `1.10`), never through a binary float.
pub type Params = BTreeMap<String, Box<RawValue>>;

/// Decodes a message's params from their JSON text.
pub fn parse_params(text: &str) -> Result<Params, RenderError> {
    let undecodable = |error: serde_json::Error| RenderError::Undecodable(error.to_string());
    let whole: &RawValue = serde_json::from_str(text).map_err(undecodable)?;
    if !whole.get().starts_with('{') {
        return Err(RenderError::ParamsNotObject);
    }
    serde_json::from_str(text).map_err(undecodable)
}

/// Replaces every `{name}` (`name` = `[a-z_][a-z0-9_]*`) in `body` with `params[name]`: a string's
/// text, or a number's digits as stored. Other braces are copied as they are, matching the
/// placeholder rule in the schema.
pub fn render(body: &str, params: &Params) -> Result<String, RenderError> {
    let mut out = String::with_capacity(body.len() + 16);
    let mut rest = body;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match placeholder_len(after) {
            Some(len) => {
                let name = &after[..len];
                let raw = params
                    .get(name)
                    .ok_or_else(|| RenderError::MissingParam(name.to_owned()))?
                    .get();
                match raw.as_bytes().first() {
                    Some(b'"') => out.push_str(
                        &serde_json::from_str::<String>(raw)
                            .map_err(|error| RenderError::Undecodable(error.to_string()))?,
                    ),
                    Some(b'-' | b'0'..=b'9') => out.push_str(raw),
                    _ => return Err(RenderError::NotScalar(name.to_owned())),
                }
                rest = &after[len + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Length of the name if `s` starts with `name}`.
fn placeholder_len(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let first = *bytes.first()?;
    if !(first.is_ascii_lowercase() || first == b'_') {
        return None;
    }
    let len = bytes
        .iter()
        .position(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_'))?;
    (bytes[len] == b'}').then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_json(body: &str, params: &str) -> Result<String, RenderError> {
        render(body, &parse_params(params)?)
    }

    #[test]
    fn fills_placeholders_with_strings_and_numbers() {
        let body = "Your verification code is {code}. Valid for {minutes} minutes.";
        let text = render_json(body, r#"{"code": "048213", "minutes": 10}"#).unwrap();
        assert_eq!(
            text,
            "Your verification code is 048213. Valid for 10 minutes."
        );
    }

    #[test]
    fn leaves_other_braces_alone() {
        let text = render_json("a {} b {X} c {code", "{}").unwrap();
        assert_eq!(text, "a {} b {X} c {code");
    }

    #[test]
    fn bengali_body_renders() {
        let text = render_json("আপনার কোড {code}।", r#"{"code": "123456"}"#).unwrap();
        assert_eq!(text, "আপনার কোড 123456।");
    }

    #[test]
    fn refuses_missing_and_non_scalar_values() {
        assert_eq!(
            render_json("{code}", "{}"),
            Err(RenderError::MissingParam("code".into()))
        );
        assert_eq!(
            render_json("{code}", r#"{"code": [1]}"#),
            Err(RenderError::NotScalar("code".into()))
        );
        assert_eq!(
            render_json("{code}", r#"{"code": null}"#),
            Err(RenderError::NotScalar("code".into()))
        );
        assert_eq!(render_json("x", "[]"), Err(RenderError::ParamsNotObject));
        assert!(matches!(
            render_json("x", "{"),
            Err(RenderError::Undecodable(_))
        ));
    }

    #[test]
    fn numbers_and_escapes_come_out_as_enqueued() {
        let text = render_json(
            "{a} {b} {c} {d}",
            r#"{"a": 99999999999999999999, "b": 1.10, "c": -0.12345678901234567, "d": "x\"\u00e9"}"#,
        )
        .unwrap();
        assert_eq!(text, "99999999999999999999 1.10 -0.12345678901234567 x\"é");
    }
}
