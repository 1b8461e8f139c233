//! Pages of TAXII objects read from the hub's log, with the caller's visibility.
//!
//! Owns: which stored events a TAXII request returns and where the next page
//! starts. The hub sequence is the paging token (`next` is the sequence of the
//! last object returned, so resumption is exact); `added_after` finds its start
//! by bisecting the log on event time. Every page is bounded in objects and in
//! records examined. Blocking (reads the log): callers use `spawn_blocking`.
//! Must never touch sled directly, nor show an event `policy::may_see` denies.

use crate::error::Result;
use crate::indicator::Millis;
use crate::log::Record;
use crate::policy;
use crate::registry::Org;
use crate::taxii::Taxii;
use crate::taxii::collections::Collection;
use crate::taxii::query::{AddedAfter, Query};
use crate::taxii::stix::{self, Context};
use crate::taxii::versions;

/// Records read from the log at once.
const READ_RECORDS: usize = 1024;
/// About the most bytes of records read at once.
const READ_BYTES: usize = 1024 * 1024;
/// Most records one page examines; a page that stops here says `more` with a
/// `next` past what it examined, so that a caller who may see little of a long
/// log still gets bounded answers.
const SCAN_BUDGET: usize = 50_000;

/// One object of a page, with where it stands in the log.
#[derive(Clone, Debug)]
pub struct Item {
    /// The hub sequence of its event (the reference collection: its position).
    pub sequence: u64,
    /// TAXII `date_added`: when the hub committed the event.
    pub date_added: Millis,
    pub object: serde_json::Value,
}

/// One page of objects.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub items: Vec<Item>,
    /// Where the next page starts (the `next` token), if there is more.
    pub next: Option<u64>,
}

/// The page of indicator-collection objects `query` asks for.
pub fn objects(
    taxii: &Taxii,
    viewer: &Org,
    collection: &Collection,
    query: &Query,
) -> Result<Page> {
    let log = &taxii.hub.log;
    let head = durable_head(taxii)?;
    let mut from = match (query.next, query.added_after) {
        (Some(next), _) => next.saturating_add(1),
        (None, Some(after)) => first_after(taxii, after, head)?,
        (None, None) => 1,
    };
    let mut page = Page::default();
    let mut examined = 0;
    while from <= head {
        let records = log.read(from, head, READ_RECORDS, READ_BYTES)?;
        if records.is_empty() {
            break;
        }
        for record in &records {
            if let Some(item) = item(taxii, viewer, collection, query, record)? {
                if page.items.len() == query.limit {
                    page.next = page.items.last().map(|i| i.sequence);
                    return Ok(page);
                }
                page.items.push(item);
            }
            from = record.sequence + 1;
            examined += 1;
            if examined >= SCAN_BUDGET && from <= head {
                page.next = Some(record.sequence);
                return Ok(page);
            }
        }
    }
    Ok(page)
}

/// The versions of object `id` in `collection` that `query` asks for.
pub fn by_id(
    taxii: &Taxii,
    viewer: &Org,
    collection: &Collection,
    id: &str,
    query: &Query,
) -> Result<Page> {
    let log = &taxii.hub.log;
    let head = durable_head(taxii)?;
    let after = query.next.unwrap_or(0);
    let mut page = Page::default();
    for sequence in visible_versions(taxii, viewer, id) {
        if sequence <= after || sequence > head {
            continue;
        }
        let Some(record) = log.read(sequence, sequence, 1, usize::MAX)?.pop() else {
            continue;
        };
        if let Some(item) = item(taxii, viewer, collection, query, &record)? {
            if page.items.len() == query.limit {
                page.next = page.items.last().map(|i| i.sequence);
                return Ok(page);
            }
            page.items.push(item);
        }
    }
    Ok(page)
}

/// The reference collection's page: TLP marking definitions, then the identity
/// of every registered organisation, all added when the hub started.
pub fn reference(taxii: &Taxii, query: &Query) -> Page {
    let mut orgs = taxii.hub.registry.all();
    orgs.sort_by(|a, b| a.id.cmp(&b.id));
    let objects = stix::tlp_markings()
        .into_iter()
        .chain(orgs.iter().map(stix::identity));
    let after = query.next.unwrap_or(0);
    let mut page = Page::default();
    for (position, object) in (1..).zip(objects) {
        let kind = object["type"].as_str().unwrap_or_default();
        let id = object["id"].as_str().unwrap_or_default();
        let wanted = position > after
            && query.matches(kind, id)
            && query.version.wants(position, 0, &[position])
            && query.added_after.is_none_or(|a| a.admits(taxii.started));
        if !wanted {
            continue;
        }
        if page.items.len() == query.limit {
            page.next = page.items.last().map(|i| i.sequence);
            return page;
        }
        page.items.push(Item {
            sequence: position,
            date_added: taxii.started,
            object,
        });
    }
    page
}

/// The sequences of the versions of `id` that `viewer` may see: its first and
/// latest are among these (a version under a marking it may not see, such as
/// the PUBLISHED after a WITHDRAWN, is not its latest).
fn visible_versions(taxii: &Taxii, viewer: &Org, id: &str) -> Vec<u64> {
    taxii
        .versions
        .of(id)
        .into_iter()
        .filter(|v| policy::may_see(viewer, v.tlp, &v.owner))
        .map(|v| v.sequence)
        .collect()
}

/// The newest durable sequence, with the version index brought up to it.
fn durable_head(taxii: &Taxii) -> Result<u64> {
    let head = taxii.hub.feed.committed();
    taxii.versions.catch_up(&taxii.hub.log, head)?;
    Ok(head)
}

/// The object `record` becomes, if `viewer` may see it and `query` wants it.
fn item(
    taxii: &Taxii,
    viewer: &Org,
    collection: &Collection,
    query: &Query,
    record: &Record,
) -> Result<Option<Item>> {
    let meta = &record.meta;
    let Some(object_type) = stix::object_type(meta.event_type) else {
        return Ok(None);
    };
    if !collection.holds_kind(meta.kind)
        || !policy::may_see(viewer, meta.tlp, &meta.source_org)
        || !(query.types.is_empty() || query.types.iter().any(|t| t == object_type))
    {
        return Ok(None);
    }
    let event = versions::decode(record)?;
    if query.added_after.is_some_and(|a| !a.admits(event.time)) {
        return Ok(None);
    }
    let Some(id) = stix::object_id(&event) else {
        return Ok(None);
    };
    if !query.matches(object_type, &id)
        || !query.version.wants(
            record.sequence,
            event.time,
            &visible_versions(taxii, viewer, &id),
        )
    {
        return Ok(None);
    }
    let context = Context {
        first_seen: taxii
            .hub
            .view
            .get(&event.indicator.key)?
            .map(|state| state.first_seen),
    };
    Ok(
        stix::object(&event, &meta.source_org, context).map(|object| Item {
            sequence: record.sequence,
            date_added: event.time,
            object,
        }),
    )
}

/// The first sequence whose event was committed after `after` (`head + 1`
/// if none), by bisection: the writer stamps each group with the clock, so
/// event times rise with the sequence.
fn first_after(taxii: &Taxii, after: AddedAfter, head: u64) -> Result<u64> {
    let (mut low, mut high) = (1, head + 1);
    while low < high {
        let middle = low + (high - low) / 2;
        let admitted = match taxii.hub.log.read(middle, middle, 1, usize::MAX)?.pop() {
            Some(record) => after.admits(versions::decode(&record)?.time),
            None => false,
        };
        if admitted {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    Ok(low)
}
