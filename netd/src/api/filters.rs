//! Docker's `filters` query parameter: a JSON object of key -> values, either
//! `{"name": ["a", "b"]}` or the older `{"name": {"a": true}}` that the docker
//! client sends. Values of one key are ORed, keys are ANDed.

use std::collections::BTreeMap;

use super::error::ApiError;

/// Parsed filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses the `filters` parameter, accepting only `allowed` keys.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Filters, ApiError> {
        let raw = match raw {
            None => return Ok(Filters::default()),
            Some(r) if r.trim().is_empty() => return Ok(Filters::default()),
            Some(r) => r,
        };
        let value: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| ApiError::BadRequest(format!("invalid filters {raw:?}: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| ApiError::BadRequest(format!("invalid filters {raw:?}: expected a JSON object")))?;
        let mut out = BTreeMap::new();
        for (key, v) in obj {
            if !allowed.contains(&key.as_str()) {
                return Err(ApiError::BadRequest(format!("invalid filter '{key}'")));
            }
            let values: Vec<String> = match v {
                serde_json::Value::Array(a) => {
                    a.iter().map(|x| x.as_str().map(str::to_owned)).collect::<Option<_>>().ok_or_else(|| {
                        ApiError::BadRequest(format!("invalid filter '{key}': values must be strings"))
                    })?
                }
                serde_json::Value::Object(m) => {
                    m.iter().filter(|(_, on)| on.as_bool() == Some(true)).map(|(k, _)| k.clone()).collect()
                }
                _ => return Err(ApiError::BadRequest(format!("invalid filter '{key}': expected a list of strings"))),
            };
            out.insert(key.clone(), values);
        }
        Ok(Filters(out))
    }

    /// The values given for `key` (empty if the key is absent).
    pub fn get(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// True if `key` is absent or any of its values satisfies `pred`.
    pub fn any(&self, key: &str, pred: impl Fn(&str) -> bool) -> bool {
        match self.0.get(key) {
            None => true,
            Some(vs) => vs.iter().any(|v| pred(v)),
        }
    }

    /// Checks that every value of `key` is one of `valid`.
    pub fn expect_values(&self, key: &str, valid: &[&str]) -> Result<(), ApiError> {
        for v in self.get(key) {
            if !valid.contains(&v.as_str()) {
                return Err(ApiError::BadRequest(format!("invalid filter: '{key}'='{v}'")));
            }
        }
        Ok(())
    }
}

/// Matches a `label` filter value (`key` or `key=value`) against labels.
pub fn label_matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_docker_shapes_parse() {
        let a = Filters::parse(Some(r#"{"name":["a","b"]}"#), &["name"]).unwrap();
        let b = Filters::parse(Some(r#"{"name":{"a":true,"b":true,"c":false}}"#), &["name"]).unwrap();
        assert_eq!(a, b);
        assert!(a.any("name", |v| v == "b"));
        assert!(a.any("driver", |_| false), "absent keys match everything");
    }

    #[test]
    fn bad_filters_are_400_with_the_key() {
        let e = Filters::parse(Some(r#"{"colour":["red"]}"#), &["name"]).unwrap_err();
        assert_eq!(e.to_string(), "invalid filter 'colour'");
        assert!(Filters::parse(Some("{not json"), &["name"]).is_err());
        assert!(Filters::parse(Some("[1]"), &["name"]).is_err());
        assert!(Filters::parse(Some(r#"{"name":[1]}"#), &["name"]).is_err());
        let f = Filters::parse(Some(r#"{"type":["weird"]}"#), &["type"]).unwrap();
        assert_eq!(
            f.expect_values("type", &["custom", "builtin"]).unwrap_err().to_string(),
            "invalid filter: 'type'='weird'"
        );
    }

    #[test]
    fn labels_match_by_key_or_pair() {
        let labels = [("env".to_owned(), "prod".to_owned())].into();
        assert!(label_matches(&labels, "env"));
        assert!(label_matches(&labels, "env=prod"));
        assert!(!label_matches(&labels, "env=dev"));
        assert!(!label_matches(&labels, "team"));
    }
}
