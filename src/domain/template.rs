//! Rendering `{placeholder}` templates with a message's params.

use serde_json::{Map, Value};

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

/// Decodes a message's params from their JSON text.
pub fn parse_params(text: &str) -> Result<Value, RenderError> {
    serde_json::from_str(text).map_err(|error| RenderError::Undecodable(error.to_string()))
}

/// Replaces every `{name}` (`name` = `[a-z_][a-z0-9_]*`) in `body` with `params[name]`.
/// Other braces are copied as they are, matching the placeholder rule in the schema.
pub fn render(body: &str, params: &Value) -> Result<String, RenderError> {
    let params: &Map<String, Value> = params.as_object().ok_or(RenderError::ParamsNotObject)?;
    let mut out = String::with_capacity(body.len() + 16);
    let mut rest = body;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match placeholder_len(after) {
            Some(len) => {
                let name = &after[..len];
                match params.get(name) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Number(n)) => out.push_str(&n.to_string()),
                    Some(_) => return Err(RenderError::NotScalar(name.to_owned())),
                    None => return Err(RenderError::MissingParam(name.to_owned())),
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
    use serde_json::json;

    #[test]
    fn fills_placeholders_with_strings_and_numbers() {
        let body = "Your verification code is {code}. Valid for {minutes} minutes.";
        let text = render(body, &json!({"code": "048213", "minutes": 10})).unwrap();
        assert_eq!(
            text,
            "Your verification code is 048213. Valid for 10 minutes."
        );
    }

    #[test]
    fn leaves_other_braces_alone() {
        let text = render("a {} b {X} c {code", &json!({})).unwrap();
        assert_eq!(text, "a {} b {X} c {code");
    }

    #[test]
    fn bengali_body_renders() {
        let text = render("আপনার কোড {code}।", &json!({"code": "123456"})).unwrap();
        assert_eq!(text, "আপনার কোড 123456।");
    }

    #[test]
    fn refuses_missing_and_non_scalar_values() {
        assert_eq!(
            render("{code}", &json!({})),
            Err(RenderError::MissingParam("code".into()))
        );
        assert_eq!(
            render("{code}", &json!({"code": [1]})),
            Err(RenderError::NotScalar("code".into()))
        );
        assert_eq!(render("x", &json!([])), Err(RenderError::ParamsNotObject));
    }
}
