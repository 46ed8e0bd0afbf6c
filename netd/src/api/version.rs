//! API version negotiation, as dockerd does it: `/_ping` announces the newest
//! version in the `API-Version` header; clients then prefix paths with
//! `/vMAJOR.MINOR/`. Too old or too new versions are refused with 400.

use std::cmp::Ordering;
use std::fmt;

use super::error::ApiError;

/// Newest API version served (Docker Engine 28.x).
pub const MAX: ApiVersion = ApiVersion { major: 1, minor: 50 };
/// Oldest API version accepted (as dockerd 28).
pub const MIN: ApiVersion = ApiVersion { major: 1, minor: 24 };

/// An API version, `MAJOR.MINOR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Splits a request path into its requested version (if prefixed) and the
/// unversioned path. Paths like `/vfoo/x` are not version prefixes (404 later).
pub fn split_path(path: &str) -> Result<(Option<ApiVersion>, &str), ApiError> {
    let Some(rest) = path.strip_prefix("/v") else { return Ok((None, path)) };
    let (ver, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if ver.is_empty() || !ver.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Ok((None, path));
    }
    let parsed = match ver.split_once('.') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains('.') => {
            a.parse().ok().zip(b.parse().ok()).map(|(major, minor)| ApiVersion { major, minor })
        }
        _ => None,
    };
    let v = parsed.ok_or_else(|| {
        ApiError::BadRequest(format!("invalid API version {ver:?}: expected MAJOR.MINOR, e.g. {MAX}"))
    })?;
    match (v.cmp(&MIN), v.cmp(&MAX)) {
        (Ordering::Less, _) => Err(ApiError::BadRequest(format!(
            "client version {v} is too old. Minimum supported API version is {MIN}, please upgrade your client to a newer version"
        ))),
        (_, Ordering::Greater) => {
            Err(ApiError::BadRequest(format!("client version {v} is too new. Maximum supported API version is {MAX}")))
        }
        _ => Ok((Some(v), tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_stripped_within_range() {
        assert_eq!(split_path("/v1.41/networks").unwrap(), (Some(ApiVersion { major: 1, minor: 41 }), "/networks"));
        assert_eq!(split_path("/v1.50/_ping").unwrap().1, "/_ping");
        assert_eq!(split_path("/networks").unwrap(), (None, "/networks"));
        assert_eq!(split_path("/version").unwrap(), (None, "/version"));
        assert_eq!(split_path("/vfoo/x").unwrap(), (None, "/vfoo/x"));
    }

    #[test]
    fn out_of_range_and_malformed_versions_are_400() {
        let e = split_path("/v1.99/version").unwrap_err();
        assert_eq!(e.to_string(), "client version 1.99 is too new. Maximum supported API version is 1.50");
        let e = split_path("/v1.12/version").unwrap_err();
        assert!(e.to_string().starts_with("client version 1.12 is too old"));
        for bad in ["/v1/version", "/v1.2.3/version", "/v.5/x", "/v99999999999.1/x"] {
            let e = split_path(bad).unwrap_err();
            assert!(matches!(e, ApiError::BadRequest(_)), "{bad}: {e}");
        }
    }
}
