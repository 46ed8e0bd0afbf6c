//! Identifiers. Docker-style object ids are 64 lowercase hex digits, shown
//! shortened to 12; each kind of object gets its own newtype so a network id
//! can never be passed where another id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("invalid {kind} id {value:?}: expected 64 lowercase hex digits")]
    Malformed { kind: &'static str, value: String },
}

/// Length of a full id, in hex digits.
pub const ID_LEN: usize = 64;
/// Length of the short form shown in tables.
pub const SHORT_LEN: usize = 12;

/// 64 random hex digits (Docker's id format).
pub fn random_hex() -> String {
    let bytes: [u8; ID_LEN / 2] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_full_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                Self(random_hex())
            }
            /// Parses a full 64-hex id.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                if is_full_id(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(IdError::Malformed { kind: $kind, value: s.to_owned() })
                }
            }
            /// The full id.
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// The 12-digit short form.
            pub fn short(&self) -> &str {
                &self.0[..SHORT_LEN]
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

hex_id!(
    /// Identifies a network (bridge, host, none, and later overlay networks).
    NetworkId,
    "network"
);
hex_id!(
    /// Identifies an image: the sha256 of its config (shown as `sha256:<hex>`).
    ImageId,
    "image"
);
hex_id!(
    /// Identifies a container.
    ContainerId,
    "container"
);
hex_id!(
    /// Identifies this node (the daemon instance), stable across restarts.
    NodeId,
    "node"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let a = NetworkId::random();
        let b = NetworkId::random();
        assert_ne!(a, b);
        assert_eq!(NetworkId::parse(a.as_str()), Ok(a.clone()));
        assert_eq!(a.short().len(), SHORT_LEN);
        assert!(a.as_str().starts_with(a.short()));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"a".repeat(65)] {
            let err = NetworkId::parse(bad).unwrap_err();
            assert!(err.to_string().contains("64 lowercase hex"), "{err}");
        }
    }

    #[test]
    fn serde_round_trip_validates() {
        let id = NodeId::random();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<NodeId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<NodeId>("\"xyz\"").is_err());
    }
}
