//! The TAXII 2.1 endpoints (read-only), routed by axum.
//!
//! Owns: the URL layout (discovery `/taxii2/`, the API root `/dip/`, its
//! collections, objects, manifests and versions), who the caller is (the
//! organisation of the verified client certificate, admitted as the gRPC API
//! admits it: revoked certificates 401, suspended organisations 403), content
//! negotiation (406 for an Accept that is not TAXII 2.1), the TAXII envelopes
//! and headers, and errors as TAXII error messages. Must never take identity
//! from the request, read the log on an async worker, or hold a lock across
//! `.await`.

use axum::Router;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::error::Error;
use crate::registry::Org;
use crate::taxii::Taxii;
use crate::taxii::collections::{self, Collection, Holds};
use crate::taxii::pages::{self, Page};
use crate::taxii::query::{self, Query};
use crate::taxii::stix;
use crate::tls::PeerInfo;

/// The TAXII media type of every response.
pub const TAXII_MEDIA_TYPE: &str = "application/taxii+json;version=2.1";
/// The path of the one API root.
pub const API_ROOT: &str = "/dip/";

/// The TAXII server's routes over `taxii`.
pub fn router(taxii: Taxii) -> Router {
    Router::new()
        .route("/taxii2/", get(discovery))
        .route(API_ROOT, get(api_root))
        .route("/dip/collections/", get(collection_list))
        .route("/dip/collections/{collection}/", get(collection))
        .route("/dip/collections/{collection}/objects/", get(objects))
        .route("/dip/collections/{collection}/manifest/", get(manifest))
        .route("/dip/collections/{collection}/objects/{id}/", get(object))
        .route(
            "/dip/collections/{collection}/objects/{id}/versions/",
            get(versions),
        )
        .fallback(not_found)
        .with_state(taxii)
}

/// An admitted caller that accepts TAXII 2.1.
pub struct Viewer(Org);

impl FromRequestParts<Taxii> for Viewer {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, taxii: &Taxii) -> Result<Viewer, Refusal> {
        let peer = parts.extensions.get::<PeerInfo>().ok_or_else(|| {
            Error::Unauthenticated("no verified client certificate on this connection".into())
        })?;
        let (org, _) = taxii
            .hub
            .admitted(&peer.identity.org_id, &peer.identity.cert_serial)?;
        if !accepts_taxii(&parts.headers) {
            return Err(Refusal {
                status: StatusCode::NOT_ACCEPTABLE,
                title: "Not Acceptable",
                description: format!(
                    "Accept: the header asks for a media type this server does not serve; \
                     expected {TAXII_MEDIA_TYPE}"
                ),
            });
        }
        Ok(Viewer(org))
    }
}

/// Does the Accept header admit TAXII 2.1 JSON? (No Accept header admits anything.)
fn accepts_taxii(headers: &HeaderMap) -> bool {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    values.is_empty()
        || values.iter().flat_map(|v| v.split(',')).any(|range| {
            let mut parts = range.split(';').map(|p| p.trim().to_ascii_lowercase());
            let media = parts.next().unwrap_or_default();
            let version = parts.find_map(|p| {
                p.strip_prefix("version=")
                    .map(|v| v.trim_matches('"').to_string())
            });
            media == "application/taxii+json" && version.as_deref().is_none_or(|v| v == "2.1")
        })
}

async fn discovery(_viewer: Viewer, headers: HeaderMap) -> Response {
    let root = match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("https://{host}{API_ROOT}"),
        None => API_ROOT.to_string(),
    };
    ok(
        json!({
            "title": "DIP Hub",
            "description": "Fraud indicators shared through the DIP Hub, read-only, \
                with the visibility of the caller's organisation",
            "default": root,
            "api_roots": [root],
        }),
        HeaderMap::new(),
    )
}

async fn api_root(_viewer: Viewer) -> Response {
    ok(
        json!({
            "title": "DIP Hub indicators",
            "description": "One collection with every indicator, one per indicator kind, \
                and one with the organisations and TLP markings they refer to",
            "versions": [TAXII_MEDIA_TYPE],
            "max_content_length": 0,
        }),
        HeaderMap::new(),
    )
}

async fn collection_list(_viewer: Viewer) -> Response {
    let all: Vec<Value> = collections::all()
        .iter()
        .map(Collection::resource)
        .collect();
    ok(json!({ "collections": all }), HeaderMap::new())
}

async fn collection(_viewer: Viewer, Path(id): Path<String>) -> Response {
    match find(&id) {
        Ok(collection) => ok(collection.resource(), HeaderMap::new()),
        Err(refusal) => refusal.into_response(),
    }
}

async fn objects(
    State(taxii): State<Taxii>,
    Viewer(org): Viewer,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    listing(taxii, org, id, raw, |item| item.object.clone()).await
}

async fn manifest(
    State(taxii): State<Taxii>,
    Viewer(org): Viewer,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    listing(taxii, org, id, raw, |item| {
        json!({
            "id": item.object["id"],
            "date_added": stix::date_added(item.date_added),
            "version": version_of(item),
            "media_type": stix::STIX_MEDIA_TYPE,
        })
    })
    .await
}

/// A page of a collection (`objects/`, `manifest/`), each item rendered by `render`.
async fn listing(
    taxii: Taxii,
    org: Org,
    collection: String,
    raw: Option<String>,
    render: impl Fn(&pages::Item) -> Value,
) -> Response {
    match page(taxii, org, &collection, None, raw, Versions::Asked).await {
        Ok(page) => envelope(page, "objects", render),
        Err(refusal) => refusal.into_response(),
    }
}

async fn object(
    State(taxii): State<Taxii>,
    Viewer(org): Viewer,
    Path((collection, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    one_object(taxii, org, collection, id, raw, Versions::Asked).await
}

async fn versions(
    State(taxii): State<Taxii>,
    Viewer(org): Viewer,
    Path((collection, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    // versions/ lists every version: match[version] is not one of its parameters.
    one_object(taxii, org, collection, id, raw, Versions::All).await
}

/// `objects/{id}/` (the versions asked for) or `versions/` (every version).
async fn one_object(
    taxii: Taxii,
    org: Org,
    collection: String,
    id: String,
    raw: Option<String>,
    versions: Versions,
) -> Response {
    match page(taxii, org, &collection, Some(id.clone()), raw, versions).await {
        Ok(page) if page.items.is_empty() => not_in(&collection, &id),
        Ok(page) if versions == Versions::All => envelope(page, "versions", version_of),
        Ok(page) => envelope(page, "objects", |item| item.object.clone()),
        Err(refusal) => refusal.into_response(),
    }
}

/// An object's version: its `modified` (`created` for objects without one).
fn version_of(item: &pages::Item) -> Value {
    item.object
        .get("modified")
        .cloned()
        .unwrap_or_else(|| item.object["created"].clone())
}

async fn not_found(_viewer: Viewer) -> Response {
    Refusal {
        status: StatusCode::NOT_FOUND,
        title: "Not Found",
        description: format!(
            "no such TAXII resource; discovery is /taxii2/, the API root {API_ROOT}"
        ),
    }
    .into_response()
}

/// Which versions of each object a page holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Versions {
    /// What `match[version]` asks for; the latest when absent.
    Asked,
    /// Every version (`versions/`).
    All,
}

/// Reads one page off the async workers.
async fn page(
    taxii: Taxii,
    org: Org,
    collection: &str,
    id: Option<String>,
    raw: Option<String>,
    versions: Versions,
) -> Result<Page, Refusal> {
    let collection = find(collection)?;
    let mut query = Query::parse(raw.as_deref().unwrap_or_default(), query::last())?;
    if versions == Versions::All {
        query.version = query::all();
    }
    if let Some(id) = &id {
        query.ids = vec![id.clone()];
    }
    let read = tokio::task::spawn_blocking(move || match (collection.holds, id) {
        (Holds::Reference, _) => Ok(pages::reference(&taxii, &query)),
        (_, Some(id)) => pages::by_id(&taxii, &org, &collection, &id, &query),
        (_, None) => pages::objects(&taxii, &org, &collection, &query),
    });
    let page = read
        .await
        .map_err(|e| Error::Unavailable(format!("the request was interrupted: {e}")))??;
    Ok(page)
}

fn find(id: &str) -> Result<Collection, Refusal> {
    collections::find(id).ok_or_else(|| Refusal {
        status: StatusCode::NOT_FOUND,
        title: "Collection not found",
        description: format!(
            "collection {id:?} does not exist; GET {API_ROOT}collections/ lists them"
        ),
    })
}

fn not_in(collection: &str, id: &str) -> Response {
    Refusal {
        status: StatusCode::NOT_FOUND,
        title: "Object not found",
        description: format!(
            "{id} is not in collection {collection} (or not visible to the caller)"
        ),
    }
    .into_response()
}

/// A TAXII envelope (`objects`) or versions resource (`versions`) with paging
/// and the X-TAXII-Date-Added-First/Last headers.
fn envelope(page: Page, field: &str, render: impl Fn(&pages::Item) -> Value) -> Response {
    let mut body = serde_json::Map::new();
    body.insert("more".into(), json!(page.next.is_some()));
    if let Some(next) = page.next {
        body.insert("next".into(), json!(next.to_string()));
    }
    let mut headers = HeaderMap::new();
    if let (Some(first), Some(last)) = (page.items.first(), page.items.last()) {
        for (name, item) in [
            ("x-taxii-date-added-first", first),
            ("x-taxii-date-added-last", last),
        ] {
            if let Ok(value) = HeaderValue::from_str(&stix::date_added(item.date_added)) {
                headers.insert(name, value);
            }
        }
        body.insert(field.into(), page.items.iter().map(render).collect());
    }
    ok(Value::Object(body), headers)
}

fn ok(body: Value, headers: HeaderMap) -> Response {
    respond(StatusCode::OK, body, headers)
}

fn respond(status: StatusCode, body: Value, mut headers: HeaderMap) -> Response {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(TAXII_MEDIA_TYPE),
    );
    (status, headers, body.to_string()).into_response()
}

/// A refused request, answered with a TAXII error message.
pub struct Refusal {
    status: StatusCode,
    title: &'static str,
    description: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        respond(
            self.status,
            json!({
                "title": self.title,
                "description": self.description,
                "http_status": self.status.as_u16().to_string(),
            }),
            HeaderMap::new(),
        )
    }
}

/// The TAXII error for a hub error; storage details are logged, not sent.
impl From<Error> for Refusal {
    fn from(error: Error) -> Refusal {
        let (status, title) = match &error {
            Error::InvalidArgument { .. } => (StatusCode::BAD_REQUEST, "Bad Request"),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            Error::PermissionDenied(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "Not Found"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
            _ => {
                tracing::error!(%error, "TAXII request failed");
                return Refusal {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    title: "Internal Server Error",
                    description: "the hub could not read its log; the error is logged".into(),
                };
            }
        };
        Refusal {
            status,
            title,
            description: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(value).expect("header"),
        );
        accepts_taxii(&headers)
    }

    #[test]
    fn accept_admits_taxii_2_1_only() {
        assert!(accepts_taxii(&HeaderMap::new()));
        assert!(accept("application/taxii+json;version=2.1"));
        assert!(accept("application/taxii+json"));
        assert!(accept("text/html, application/taxii+json; version=2.1"));
        assert!(!accept("application/taxii+json;version=2.0"));
        assert!(!accept("application/json"));
        assert!(!accept("*/*"));
    }
}
