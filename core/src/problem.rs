//! RFC 9457 problem details, the one error body both the proxy and the admin API send.

use serde::Serialize;
use serde_json::{Map, Value};

pub const CONTENT_TYPE: &str = "application/problem+json";
/// Base of every problem `type` URI; the suffix is stable and documented.
pub const TYPE_BASE: &str = "https://tollgate.dev/problems/";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Extension members (RFC 9457 §3.2), flattened into the object.
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// `kind` is the stable suffix of the type URI, e.g. `quota-exceeded`.
    pub fn new(kind: &str, title: &str, status: u16) -> Self {
        Self {
            type_uri: format!("{TYPE_BASE}{kind}"),
            title: title.to_string(),
            status,
            detail: None,
            instance: None,
            extensions: Map::new(),
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_string(), value.into());
        self
    }

    /// The stable suffix of `type` (`quota-exceeded`).
    pub fn kind(&self) -> &str {
        self.type_uri
            .strip_prefix(TYPE_BASE)
            .unwrap_or(&self.type_uri)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings, numbers and JSON values cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9457_members_and_extensions() {
        let p = Problem::new("quota-exceeded", "Too Many Requests", 429)
            .detail("limit minute exceeded")
            .with("limits", vec!["minute"]);
        let v: Value = serde_json::from_slice(&p.to_json()).expect("json");
        assert_eq!(v["type"], "https://tollgate.dev/problems/quota-exceeded");
        assert_eq!(v["status"], 429);
        assert_eq!(v["limits"][0], "minute");
        assert!(v.get("instance").is_none());
        assert_eq!(p.kind(), "quota-exceeded");
    }
}
