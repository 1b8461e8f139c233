//! The organisation registry: who each organisation is, its role, and its status.
//!
//! Owns: the mapping org id → (name, role, status), loaded from a TOML file
//! (`certs/orgs.toml` in development) and changeable at run time (suspension takes
//! effect at once). Must never decide what a role may do (that is `policy`) nor
//! read certificates (that is `identity`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits::LimitOverrides;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    Regulator,
    LawEnforcement,
    Bank,
    Tsp,
    PaymentOperator,
    Platform,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Regulator => "REGULATOR",
            Role::LawEnforcement => "LAW_ENFORCEMENT",
            Role::Bank => "BANK",
            Role::Tsp => "TSP",
            Role::PaymentOperator => "PAYMENT_OPERATOR",
            Role::Platform => "PLATFORM",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrgStatus {
    #[default]
    Active,
    Suspended,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub status: OrgStatus,
    /// Limits of this organisation over its role's (see `limits`).
    #[serde(default, skip_serializing_if = "LimitOverrides::is_empty")]
    pub limits: LimitOverrides,
}

#[derive(Debug, Deserialize, Serialize)]
struct RegistryFile {
    #[serde(rename = "org", default)]
    orgs: Vec<Org>,
}

/// The organisations the hub knows, shared by every request.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    orgs: Arc<RwLock<BTreeMap<String, Org>>>,
}

impl Registry {
    pub fn from_orgs(orgs: impl IntoIterator<Item = Org>) -> Result<Registry> {
        let mut map = BTreeMap::new();
        for org in orgs {
            validate_org_id(&org.id)?;
            if let Some(previous) = map.insert(org.id.clone(), org) {
                return Err(Error::Config(format!(
                    "organisation {} is listed twice in the registry",
                    previous.id
                )));
            }
        }
        Ok(Registry {
            orgs: Arc::new(RwLock::new(map)),
        })
    }

    pub fn parse(toml_text: &str) -> Result<Registry> {
        let file: RegistryFile = toml::from_str(toml_text)
            .map_err(|e| Error::Config(format!("organisation registry: {e}")))?;
        Registry::from_orgs(file.orgs)
    }

    pub fn load(path: &Path) -> Result<Registry> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading registry {}", path.display()), e))?;
        Registry::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// The active organisation `org_id`, or PERMISSION_DENIED saying why not.
    pub fn active(&self, org_id: &str) -> Result<Org> {
        let orgs = self
            .orgs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match orgs.get(org_id) {
            None => Err(Error::PermissionDenied(format!(
                "organisation {org_id} is not registered with the hub; ask the regulator to onboard it"
            ))),
            Some(org) if org.status == OrgStatus::Suspended => Err(Error::PermissionDenied(
                format!("organisation {org_id} is suspended by the regulator"),
            )),
            Some(org) => Ok(org.clone()),
        }
    }

    pub fn get(&self, org_id: &str) -> Option<Org> {
        let orgs = self
            .orgs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        orgs.get(org_id).cloned()
    }

    /// Every organisation, ordered by id.
    pub fn all(&self) -> Vec<Org> {
        let orgs = self
            .orgs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        orgs.values().cloned().collect()
    }

    /// Adds or replaces an organisation.
    pub fn upsert(&self, org: Org) -> Result<()> {
        validate_org_id(&org.id)?;
        let mut orgs = self
            .orgs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        orgs.insert(org.id.clone(), org);
        Ok(())
    }
}

/// Org ids appear in certificates (`urn:dip:org:<id>`) and storage keys.
pub fn validate_org_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "organisation id {id:?} is not valid; expected 1-63 characters of a-z, 0-9 and '-', not starting with '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles_and_statuses() {
        let registry = Registry::parse(
            r#"
            [[org]]
            id = "police-mumbai"
            name = "Mumbai Police Cyber Cell"
            role = "LAW_ENFORCEMENT"

            [[org]]
            id = "bank-b"
            name = "Bank B"
            role = "BANK"
            status = "SUSPENDED"
            "#,
        )
        .expect("parses");
        assert_eq!(
            registry.active("police-mumbai").expect("active").role,
            Role::LawEnforcement
        );
        let suspended = registry.active("bank-b").expect_err("suspended");
        assert!(suspended.to_string().contains("suspended"));
        let unknown = registry.active("nobody").expect_err("unknown");
        assert!(unknown.to_string().contains("not registered"));
    }

    #[test]
    fn reads_an_organisations_own_limits() {
        let registry = Registry::parse(
            "[[org]]\nid = \"a\"\nname = \"A\"\nrole = \"BANK\"\nlimits = { subscribe_streams = 5 }\n",
        )
        .expect("parses");
        let org = registry.active("a").expect("active");
        assert_eq!(org.limits.subscribe_streams, Some(5));
        assert_eq!(org.limits.connections, None);
        let typo = Registry::parse(
            "[[org]]\nid = \"a\"\nname = \"A\"\nrole = \"BANK\"\nlimits = { streams = 5 }\n",
        );
        assert!(
            typo.expect_err("unknown limit")
                .to_string()
                .contains("streams")
        );
    }

    #[test]
    fn refuses_bad_ids_and_duplicates() {
        let bad = Registry::parse("[[org]]\nid = \"Bad Id\"\nname = \"x\"\nrole = \"BANK\"\n");
        assert!(bad.expect_err("bad id").to_string().contains("not valid"));
        let twice = "[[org]]\nid = \"a\"\nname = \"x\"\nrole = \"BANK\"\n".repeat(2);
        assert!(
            Registry::parse(&twice)
                .expect_err("dup")
                .to_string()
                .contains("twice")
        );
    }
}
