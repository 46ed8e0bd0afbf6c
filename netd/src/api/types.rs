//! Docker Engine API JSON shapes (field names exactly as the API has them),
//! built from the store's records.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::NetworkRecord;

/// `IPAM.Config[]` entry.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamConfig {
    #[serde(rename = "Subnet", default, skip_serializing_if = "String::is_empty")]
    pub subnet: String,
    #[serde(rename = "IPRange", default, skip_serializing_if = "String::is_empty")]
    pub ip_range: String,
    #[serde(rename = "Gateway", default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "AuxiliaryAddresses", default, skip_serializing_if = "Option::is_none")]
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

/// `IPAM` object of a network.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ipam {
    #[serde(rename = "Driver", default)]
    pub driver: String,
    #[serde(rename = "Options", default)]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(rename = "Config", default)]
    pub config: Option<Vec<IpamConfig>>,
}

/// `ConfigFrom` of a network.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConfigReference {
    #[serde(rename = "Network", default)]
    pub network: String,
}

/// A network as `GET /networks` and `GET /networks/{id}` return it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Network {
    pub name: String,
    pub id: String,
    pub created: String,
    pub scope: String,
    pub driver: String,
    #[serde(rename = "EnableIPv4")]
    pub enable_ipv4: bool,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub config_from: ConfigReference,
    pub config_only: bool,
    pub containers: BTreeMap<String, serde_json::Value>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

impl From<&NetworkRecord> for Network {
    fn from(n: &NetworkRecord) -> Network {
        Network {
            name: n.name.clone(),
            id: n.id.to_string(),
            created: n.created.clone(),
            scope: n.scope.as_str().to_owned(),
            driver: n.driver.as_str().to_owned(),
            enable_ipv4: true,
            enable_ipv6: n.enable_ipv6,
            ipam: Ipam {
                driver: n.ipam_driver.clone(),
                options: None,
                config: Some(
                    n.ipam
                        .iter()
                        .map(|p| IpamConfig {
                            subnet: p.subnet.clone(),
                            ip_range: p.ip_range.clone().unwrap_or_default(),
                            gateway: p.gateway.clone().unwrap_or_default(),
                            aux_addresses: None,
                        })
                        .collect(),
                ),
            },
            internal: n.internal,
            attachable: n.attachable,
            ingress: n.ingress,
            config_from: ConfigReference::default(),
            config_only: false,
            containers: BTreeMap::new(),
            options: n.options.clone(),
            labels: n.labels.clone(),
        }
    }
}

/// Body of `POST /networks/create`. Unknown fields are ignored, as dockerd
/// does, so newer clients keep working; known fields are type-checked.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NetworkCreate {
    #[serde(rename = "Name", default)]
    pub name: Option<String>,
    #[serde(rename = "Driver", default)]
    pub driver: Option<String>,
    #[serde(rename = "Scope", default)]
    pub scope: Option<String>,
    #[serde(rename = "Internal", default)]
    pub internal: bool,
    #[serde(rename = "Attachable", default)]
    pub attachable: bool,
    #[serde(rename = "Ingress", default)]
    pub ingress: bool,
    #[serde(rename = "EnableIPv6", default)]
    pub enable_ipv6: Option<bool>,
    #[serde(rename = "IPAM", default)]
    pub ipam: Option<Ipam>,
    #[serde(rename = "Options", default)]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Body of `POST /networks/{id}/connect` and `/disconnect`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NetworkConnect {
    #[serde(rename = "Container", default)]
    pub container: String,
    #[serde(rename = "Force", default)]
    pub force: bool,
    #[serde(rename = "EndpointConfig", default)]
    pub endpoint_config: Option<serde_json::Value>,
}
