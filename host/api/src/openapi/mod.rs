//! The API's contract: an OpenAPI 3.1 document generated from the handlers'
//! `#[utoipa::path]` attributes and the types in [`schemas`], served at
//! `/openapi.json` with Swagger UI at `/docs` (its assets are in the binary).
//! The router is built from the same attributes (`utoipa_axum::routes!`), so
//! a route cannot exist undocumented; the document is also committed
//! (`host/api/openapi.json`) and a test fails when the two differ.

pub mod admin_schemas;
pub mod return_schemas;
pub mod schemas;
pub mod views;
pub mod webhook_schemas;

use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "OMS",
        description = "Multi-tenant order management. Tenants' clients use `/api/v1` with \
            `X-Tenant-Id` and a bearer API key holding the scope each call names; operators use \
            `/admin/v1` with a bearer operator token (viewers read, admins change). Every \
            refusal is the JSON error envelope (`Error`) with a stable `code`, and every \
            response carries `X-Request-Id`. Money is an integer number of minor units.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    tags(
        (name = "orders", description = "Placing, reading, cancelling and fulfilling orders."),
        (name = "inventory", description = "Stock per SKU and warehouse."),
        (name = "webhooks", description = "A tenant's endpoints for its events, signed and delivered from the outbox."),
        (name = "steps", description = "The state a tenant's own saga steps keep."),
        (name = "plugins", description = "A tenant's own components: upload, versions, calls."),
        (name = "tenants", description = "Operators: tenants and their API keys."),
        (name = "rollouts", description = "Operators: activating, shadowing and canarying components."),
        (name = "sagas", description = "Operators: stuck sagas, payments reconciliation, dead letters."),
        (name = "operators", description = "Operators: who may operate, and what they did."),
    ),
    components(schemas(
        schemas::Error,
        schemas::ErrorBody,
        admin_schemas::Slot,
        admin_schemas::TenantAction,
        admin_schemas::KeyAction,
        admin_schemas::SagaAction,
    ))
)]
pub struct ApiDoc;

/// What every operation shares, added once rather than on each handler:
/// how it authenticates and the refusals any request can meet on the way.
pub(crate) struct Contract;

/// Statuses any operation may answer with, besides its own: a malformed
/// request, missing or wrong credentials, missing scope or role or a
/// suspended tenant, something not found, a body too large or not JSON, a
/// body that fails its checks, a rate limit, an unreadable stored record,
/// and the service unable to answer now.
const REFUSALS: [(&str, &str); 10] = [
    ("400", "The request is malformed."),
    ("401", "Missing or unknown credentials."),
    (
        "403",
        "The credentials lack the scope or role, or the tenant is suspended.",
    ),
    ("404", "Not found."),
    ("413", "The body is larger than this route takes."),
    ("415", "The body is not `application/json`."),
    (
        "422",
        "The body is well-formed but not acceptable; `details.errors` names each field.",
    ),
    ("429", "Rate limited; retry after `Retry-After` seconds."),
    ("500", "A stored record could not be read."),
    (
        "503",
        "The service cannot answer now; retry after `Retry-After` seconds.",
    ),
];

impl Modify for Contract {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            "tenantId".into(),
            RefOr::T(SecurityScheme::ApiKey(ApiKey::Header(
                ApiKeyValue::with_description("X-Tenant-Id", "The tenant the call acts for."),
            ))),
        );
        components.security_schemes.insert(
            "tenantKey".into(),
            RefOr::T(SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("One of the tenant's API keys."))
                    .build(),
            )),
        );
        components.security_schemes.insert(
            "operatorToken".into(),
            RefOr::T(SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An operator's token (or the bootstrap OMS_ADMIN_TOKEN).",
                    ))
                    .build(),
            )),
        );
        for (status, description) in REFUSALS {
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("Error"))),
                )
                .header(
                    "X-Request-Id",
                    utoipa::openapi::header::Header::new(String::schema()),
                )
                .build();
            components
                .responses
                .insert(format!("E{status}"), RefOr::T(response));
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                if path.starts_with("/admin/") && op.security.is_none() {
                    op.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                        "operatorToken",
                        Vec::<String>::new(),
                    )]);
                }
                optional_body_is_absent_not_null(op);
                for (status, _) in REFUSALS {
                    op.responses
                        .responses
                        .entry(status.into())
                        .or_insert_with(|| {
                            RefOr::Ref(Ref::from_response_name(format!("E{status}")))
                        });
                }
            }
        }
    }
}

/// A body a handler may go without (`Option<T>` in its attribute) is left
/// out when not sent, never `null`: the document says so.
fn optional_body_is_absent_not_null(op: &mut utoipa::openapi::path::Operation) {
    let Some(RefOr::T(body)) = op.request_body.as_mut() else {
        return;
    };
    if body.required == Some(utoipa::openapi::Required::True) {
        return;
    }
    for content in body.content.values_mut() {
        if let RefOr::T(c) = content
            && let Some(RefOr::T(utoipa::openapi::schema::Schema::OneOf(one))) = &c.schema
            && let Some(first @ RefOr::Ref(_)) = one.items.first()
        {
            c.schema = Some(first.clone());
        }
    }
}

/// The document as committed: pretty JSON with a final newline.
pub fn render(doc: &Document) -> Result<String, serde_json::Error> {
    doc.to_pretty_json().map(|text| text + "\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    /// The committed document is the code's. `OMS_UPDATE_OPENAPI=1` rewrites
    /// it after a change to the API; review the diff as part of the change.
    #[test]
    fn the_committed_document_is_the_codes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let generated = super::render(&crate::openapi_document()).unwrap();
        if std::env::var_os("OMS_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "host/api/openapi.json differs from the API the code serves; \
             run `OMS_UPDATE_OPENAPI=1 cargo test -p oms-api openapi` and commit the file"
        );
    }

    #[test]
    fn every_request_body_has_an_example() {
        let doc: serde_json::Value =
            serde_json::from_str(&super::render(&crate::openapi_document()).unwrap()).unwrap();
        let schemas = &doc["components"]["schemas"];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let Some(content) = op["requestBody"]["content"].as_object() else {
                    continue;
                };
                for (media, body) in content {
                    if media != "application/json" {
                        continue;
                    }
                    let schema = &body["schema"];
                    let name = schema["$ref"]
                        .as_str()
                        .or_else(|| schema["oneOf"][0]["$ref"].as_str())
                        .and_then(|r| r.rsplit('/').next())
                        .unwrap_or_else(|| panic!("{method} {path}: an unnamed body"));
                    assert!(
                        !schemas[name]["example"].is_null() || !body["example"].is_null(),
                        "{method} {path}: {name} has no example"
                    );
                }
            }
        }
    }
}
