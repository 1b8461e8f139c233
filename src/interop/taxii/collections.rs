//! The TAXII collections the hub serves, and which events each one holds.
//!
//! Owns: the fixed list of collections (one with every indicator, one per
//! indicator kind, and one with the organisations' identities and the TLP
//! marking definitions that the others reference), their stable ids, and their
//! TAXII resource form. Pure. Must never decide visibility (that is `policy`).

use serde_json::{Value, json};

use crate::indicator::Kind;
use crate::taxii::stix;

/// Every indicator kind, in the wire contract's order.
const KINDS: [Kind; 9] = [
    Kind::PhoneNumber,
    Kind::Imei,
    Kind::Url,
    Kind::Domain,
    Kind::IpAddress,
    Kind::UpiId,
    Kind::BankAccount,
    Kind::Email,
    Kind::SmsHeader,
];

/// What a collection holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    /// Events about indicators of any kind.
    Indicators,
    /// Events about indicators of one kind.
    Kind(Kind),
    /// Organisation identities and TLP marking definitions.
    Reference,
}

/// One TAXII collection.
#[derive(Clone, Debug)]
pub struct Collection {
    pub id: String,
    pub name: String,
    pub title: String,
    pub description: String,
    pub holds: Holds,
}

impl Collection {
    /// Does this collection hold events about indicators of `kind`?
    pub fn holds_kind(&self, kind: Kind) -> bool {
        match self.holds {
            Holds::Indicators => true,
            Holds::Kind(own) => own == kind,
            Holds::Reference => false,
        }
    }

    /// The TAXII collection resource.
    pub fn resource(&self) -> Value {
        json!({
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "alias": self.name,
            "can_read": true,
            "can_write": false,
            "media_types": [stix::STIX_MEDIA_TYPE],
        })
    }
}

/// Every collection, the all-indicators one first.
pub fn all() -> Vec<Collection> {
    let mut collections = vec![Collection {
        id: stix::collection_id("indicators"),
        name: "indicators".into(),
        title: "All indicators".into(),
        description: "Every indicator the caller may see, with its sightings and actions, \
            in the hub's order"
            .into(),
        holds: Holds::Indicators,
    }];
    collections.extend(KINDS.iter().map(|&kind| {
        let name = stix::kind_label(kind);
        Collection {
            id: stix::collection_id(name),
            name: name.into(),
            title: format!("Indicators: {name}"),
            description: format!(
                "The {name} indicators the caller may see, with their sightings and actions"
            ),
            holds: Holds::Kind(kind),
        }
    }));
    collections.push(Collection {
        id: stix::collection_id("reference"),
        name: "reference".into(),
        title: "Organisations and markings".into(),
        description: "The identity of every registered organisation and the TLP 2.0 \
            marking definitions that the indicators refer to"
            .into(),
        holds: Holds::Reference,
    });
    collections
}

/// The collection with id (or alias) `id`.
pub fn find(id: &str) -> Option<Collection> {
    all().into_iter().find(|c| c.id == id || c.name == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_found_by_id_or_alias() {
        let all = all();
        let mut ids: Vec<_> = all.iter().map(|c| c.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
        for c in &all {
            assert_eq!(find(&c.id).map(|f| f.name), Some(c.name.clone()));
            assert_eq!(find(&c.name).map(|f| f.id), Some(c.id.clone()));
        }
        assert!(find("nope").is_none());
    }
}
