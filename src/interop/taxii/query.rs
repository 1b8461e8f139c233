//! The URL parameters of TAXII 2.1 requests: `added_after`, `limit`, `next`
//! and the `match[...]` filters, parsed and checked once.
//!
//! Owns: turning a query string into a [`Query`], refusing what is wrong with a
//! message naming the parameter, what was wrong and what is expected. Pure.
//! Must never read the log.

use crate::error::{Error, Result};
use crate::indicator::Millis;

/// Objects in one page unless the client asks for fewer.
pub const DEFAULT_LIMIT: usize = 100;
/// Most objects in one page, whatever the client asks.
pub const MAX_LIMIT: usize = 1000;

/// Which versions of each object a request wants (`match[version]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionMatch {
    pub first: bool,
    pub last: bool,
    pub all: bool,
    /// Specific versions (`modified` timestamps), as given.
    pub at: Vec<Millis>,
}

impl VersionMatch {
    /// Is the version at `sequence` (modified at `modified`) wanted, given all
    /// versions' sequences `versions` (ascending)?
    pub fn wants(&self, sequence: u64, modified: Millis, versions: &[u64]) -> bool {
        self.all
            || (self.first && versions.first() == Some(&sequence))
            || (self.last && versions.last() == Some(&sequence))
            || self.at.contains(&modified)
    }
}

/// A parsed TAXII query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Only objects added after this time (milliseconds, rounded down).
    pub added_after: Option<AddedAfter>,
    pub limit: usize,
    /// Resume after this hub sequence (or reference-collection position).
    pub next: Option<u64>,
    /// `match[type]`: empty means every type.
    pub types: Vec<String>,
    /// `match[id]`: empty means every id.
    pub ids: Vec<String>,
    pub version: VersionMatch,
    /// `match[spec_version]` names only versions other than 2.1.
    pub no_spec_version: bool,
}

/// `added_after`, in microseconds since the epoch (TAXII's precision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddedAfter(pub i128);

impl AddedAfter {
    /// Was something added at `millis` after this?
    pub fn admits(self, millis: Millis) -> bool {
        i128::from(millis) * 1000 > self.0
    }
}

impl Query {
    /// Parses `raw` (the URL query, without `?`); `default_version` is what
    /// `match[version]` means when absent (`last`, or `all` for `versions/`).
    pub fn parse(raw: &str, default_version: VersionMatch) -> Result<Query> {
        let mut query = Query {
            added_after: None,
            limit: DEFAULT_LIMIT,
            next: None,
            types: Vec::new(),
            ids: Vec::new(),
            version: default_version,
            no_spec_version: false,
        };
        let mut version_given = false;
        for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            match name.as_ref() {
                "added_after" => query.added_after = Some(added_after(&value)?),
                "limit" => query.limit = limit(&value)?,
                "next" => {
                    query.next = Some(value.parse().map_err(|_| {
                        Error::invalid(
                            "next",
                            format!("{value:?} is not a token this server issued"),
                            "the `next` value of the previous page, unchanged",
                        )
                    })?)
                }
                "match[type]" => query.types.extend(list(&value)),
                "match[id]" => query.ids.extend(list(&value)),
                "match[version]" => {
                    if !version_given {
                        query.version = VersionMatch::default();
                        version_given = true;
                    }
                    for item in list(&value) {
                        match item.as_str() {
                            "first" => query.version.first = true,
                            "last" => query.version.last = true,
                            "all" => query.version.all = true,
                            other => query.version.at.push(
                                millis_of(other)
                                    .map(|micros| (micros / 1000) as Millis)
                                    .ok_or_else(|| {
                                        Error::invalid(
                                            "match[version]",
                                            format!("{other:?} is not a version"),
                                            "first, last, all, or a timestamp such as \
                                             2026-01-31T12:00:00.000Z (comma-separated)",
                                        )
                                    })?,
                            ),
                        }
                    }
                }
                "match[spec_version]" => {
                    query.no_spec_version = !list(&value).iter().any(|v| v == "2.1");
                }
                _ => {}
            }
        }
        Ok(query)
    }

    /// Does the object of type `object_type` and id `id` pass the type and id filters?
    pub fn matches(&self, object_type: &str, id: &str) -> bool {
        !self.no_spec_version
            && (self.types.is_empty() || self.types.iter().any(|t| t == object_type))
            && (self.ids.is_empty() || self.ids.iter().any(|i| i == id))
    }
}

/// `match[version]=last`, the default of `objects/`.
pub fn last() -> VersionMatch {
    VersionMatch {
        last: true,
        ..VersionMatch::default()
    }
}

/// `match[version]=all`, the default of `versions/`.
pub fn all() -> VersionMatch {
    VersionMatch {
        all: true,
        ..VersionMatch::default()
    }
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
        .collect()
}

fn limit(value: &str) -> Result<usize> {
    match value.parse::<usize>() {
        Ok(0) | Err(_) => Err(Error::invalid(
            "limit",
            format!("{value:?} is not a positive integer"),
            format!("a positive integer (pages hold at most {MAX_LIMIT} objects)"),
        )),
        Ok(n) => Ok(n.min(MAX_LIMIT)),
    }
}

fn added_after(value: &str) -> Result<AddedAfter> {
    millis_of(value).map(AddedAfter).ok_or_else(|| {
        Error::invalid(
            "added_after",
            format!("{value:?} is not a timestamp"),
            "an RFC 3339 UTC timestamp such as 2026-01-31T12:00:00.000000Z",
        )
    })
}

/// Microseconds since the epoch of an RFC 3339 timestamp.
fn millis_of(value: &str) -> Option<i128> {
    let time =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).ok()?;
    Some(time.unix_timestamp_nanos() / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paging_and_filters() {
        let q = Query::parse(
            "added_after=2023-11-14T22:13:20.123000Z&limit=5000&next=42&match%5Btype%5D=indicator,sighting",
            last(),
        )
        .expect("valid");
        assert_eq!(q.limit, MAX_LIMIT);
        assert_eq!(q.next, Some(42));
        assert_eq!(q.types, ["indicator", "sighting"]);
        let after = q.added_after.expect("added_after");
        assert!(!after.admits(1_700_000_000_123));
        assert!(after.admits(1_700_000_000_124));
        assert!(q.version.last && !q.version.all);
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (raw, field) in [
            ("limit=0", "limit"),
            ("limit=x", "limit"),
            ("next=abc", "next"),
            ("added_after=yesterday", "added_after"),
            ("match[version]=newest", "match[version]"),
        ] {
            let error = Query::parse(raw, last()).expect_err(raw).to_string();
            assert!(error.starts_with(field), "{raw}: {error}");
        }
    }

    #[test]
    fn version_match_picks_first_last_or_all() {
        let versions = [3, 7, 9];
        assert!(last().wants(9, 0, &versions));
        assert!(!last().wants(7, 0, &versions));
        assert!(all().wants(7, 0, &versions));
        let q = Query::parse("match[version]=first", last()).expect("valid");
        assert!(q.version.wants(3, 0, &versions) && !q.version.wants(9, 0, &versions));
    }
}
